-- Everything kept about one gateway request: its audit trail (one row per input and outcome,
-- oldest first) joined to the redacted record it archived and the policy decisions taken on it.
-- BigQuery Standard SQL, the body of the table function trace_request(wanted_request_id,
-- first_day, last_day) that Terraform creates; the dataset placeholder names the dataset.
-- BigQuery only: raw_events is the external table over the Avro archive (the embedded
-- equivalent is python -m pipelines.trace). first_day and last_day bound the event dates of the
-- archived records joined (the archive keeps 30 days); audit rows are kept whatever their date.
-- A dead-lettered input has no archived record: its reason and dead_letter_id say why (the
-- payload stays in the access-restricted dead-letter bucket).
WITH trail AS (
  SELECT *
  FROM `{dataset}.audit_log_unique`
  WHERE request_id = wanted_request_id
),
records AS (
  SELECT *
  FROM `{dataset}.raw_events`
  WHERE request_id = wanted_request_id AND event_date BETWEEN first_day AND last_day
)
SELECT
  t.recorded_at,
  t.outcome,
  t.reason,
  t.event_id,
  t.input_id,
  t.dead_letter_id,
  t.user_key,
  r.event_time,
  r.ingested_at,
  r.processed_at,
  r.model,
  r.model_version,
  r.region,
  r.latency_ms,
  r.token_count,
  COALESCE(r.data_class, t.data_class) AS data_class,
  r.policy_flags,
  r.redaction_counts,
  r.redaction_engine,
  r.policy_version,
  r.prompt,
  r.response
FROM trail AS t
LEFT JOIN records AS r
  ON r.event_id = t.event_id AND t.outcome = 'written'
ORDER BY t.recorded_at
