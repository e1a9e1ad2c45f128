"""Embedded sinks (no server): Avro files, a DuckDB warehouse and a SQLite audit log."""
