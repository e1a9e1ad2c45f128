-- One row per input (audit_id) from the append-only BigQuery audit_log.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of audit_log. BigQuery only:
-- the appends into audit_log are at least once (a retried batch can store a record twice), and
-- an input processed twice (a Pub/Sub redelivery) can have two records with different
-- outcomes. audit_id is derived from the input's identity (input_id), so this view keeps one
-- row per input: the record whose outcome ranks highest (written, duplicate_conflict,
-- duplicate, dead_lettered: transforms.audit.OUTCOME_PRECEDENCE, the rule PostgreSQL's upsert
-- applies), then the first recorded. PostgreSQL's audit_log is exact on its own.
SELECT * EXCEPT (copy_number)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY audit_id
      ORDER BY
        CASE outcome
          WHEN 'written' THEN 4
          WHEN 'duplicate_conflict' THEN 3
          WHEN 'duplicate' THEN 2
          WHEN 'dead_lettered' THEN 1
          ELSE 0
        END DESC,
        recorded_at
    ) AS copy_number
  FROM `{dataset}.audit_log`
)
WHERE copy_number = 1
