-- Schema drift per (day, field_name): events that carried a field the contract does not know,
-- from metrics_minute.schema_drift_counts. BigQuery Standard SQL; the dataset placeholder names
-- the dataset of metrics_minute. Days are UTC. A name outside [a-z0-9_]{1,64}, or beyond the 8
-- names kept per event, is counted as `other` (transforms/versions.py drift_names).
-- It reads the minute rows, so it covers the days they are kept (30). event_share = events
-- carrying the field / all events of the day; first_seen and last_seen are the window starts of
-- the first and last window that had it.
WITH requests AS (
  SELECT
    DATE(DATETIME(window_start, 'UTC')) AS day,
    SUM(request_count) AS request_count
  FROM `{dataset}.metrics_minute`
  GROUP BY day
),
drift AS (
  SELECT
    DATE(DATETIME(m.window_start, 'UTC')) AS day,
    d.key AS field_name,
    SUM(d.value) AS event_count,
    COUNT(DISTINCT m.model) AS model_count,
    MIN(m.window_start) AS first_seen,
    MAX(m.window_start) AS last_seen
  FROM `{dataset}.metrics_minute` AS m, UNNEST(m.schema_drift_counts) AS d
  GROUP BY day, field_name
)
SELECT
  d.day,
  d.field_name,
  d.event_count,
  r.request_count,
  SAFE_DIVIDE(d.event_count, r.request_count) AS event_share,
  d.model_count,
  d.first_seen,
  d.last_seen
FROM drift AS d
JOIN requests AS r
  ON d.day = r.day
