"""The data contract: Avro schemas in ``schemas/avro/`` and what is derived from them."""
