-- One row per audit record (audit_id) from the append-only BigQuery audit_log.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of audit_log. BigQuery only:
-- the streaming inserts into audit_log are at least once (insert ids dedupe retries on a
-- best-effort basis), so a retried batch or a replay can store a record twice; this view shows
-- the first stored copy. audit_id is derived from (event_id, outcome), or from the dead-letter
-- id, so it is one row per event and outcome. PostgreSQL's audit_log is exact on its own.
SELECT * EXCEPT (copy_number)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY audit_id ORDER BY recorded_at) AS copy_number
  FROM `{dataset}.audit_log`
)
WHERE copy_number = 1
