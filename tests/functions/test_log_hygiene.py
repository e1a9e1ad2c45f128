"""Log hygiene (transforms/pii/logs.py) on single records: arguments withheld, PII scrubbed."""

import logging

from transforms.pii import logs


def _record(name, level, msg, *args, exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_another_librarys_debug_record_keeps_its_template_only():
    record = _record(
        "apache_beam.runners.worker.operations", logging.DEBUG, "Processing [%s] in %s", "R-7", "op"
    )
    logs.sanitize(record)
    assert record.getMessage() == "Processing [<withheld>] in <withheld>"


def test_the_projects_records_and_info_records_keep_their_arguments_with_pii_scrubbed():
    for name, level in (("transforms.redact", logging.DEBUG), ("apache_beam", logging.INFO)):
        record = _record(name, level, "%d rows for %s", 3, "bob@example.com")
        logs.sanitize(record)
        assert record.getMessage() == "3 rows for [EMAIL_ADDRESS]"


def test_exception_text_is_scrubbed_and_the_exception_dropped():
    try:
        raise ValueError("duplicate key carol@example.com")
    except ValueError:
        import sys

        record = _record("duckdb", logging.ERROR, "write failed", exc_info=sys.exc_info())
    logs.sanitize(record)
    assert record.exc_info is None
    assert "[EMAIL_ADDRESS]" in record.exc_text and "carol" not in record.exc_text


def test_arguments_that_do_not_fit_their_template_are_never_shown():
    record = _record("pipelines.x", logging.INFO, "%s and %s", "dave@example.com")
    logs.sanitize(record)
    assert "dave" not in record.getMessage()


def test_install_puts_it_in_front_of_every_logger_once():
    before = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        logs.install()
        installed = logging.getLogRecordFactory()
        logs.install()
        assert logging.getLogRecordFactory() is installed
        record = installed("grpc", logging.DEBUG, __file__, 1, "sent %s", ("x",), None)
        assert record.getMessage() == "sent <withheld>"
    finally:
        logging.setLogRecordFactory(before)
