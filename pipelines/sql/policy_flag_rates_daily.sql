-- Share of requests carrying each gateway policy flag, per (day, model), from metrics_minute.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of metrics_minute. Days are UTC.
-- flag_rate = flag_count / request_count; a request with two flags counts once for each.
-- Flags never raised on a day have no row (their rate is 0).
WITH requests AS (
  SELECT
    DATE(DATETIME(window_start, 'UTC')) AS day,
    model,
    SUM(request_count) AS request_count
  FROM `{dataset}.metrics_minute`
  GROUP BY day, model
),
flags AS (
  SELECT
    DATE(DATETIME(m.window_start, 'UTC')) AS day,
    m.model,
    f.key AS policy_flag,
    SUM(f.value) AS flag_count
  FROM `{dataset}.metrics_minute` AS m, UNNEST(m.policy_flag_counts) AS f
  GROUP BY day, model, policy_flag
)
SELECT
  f.day,
  f.model,
  f.policy_flag,
  f.flag_count,
  r.request_count,
  SAFE_DIVIDE(f.flag_count, r.request_count) AS flag_rate
FROM flags AS f
JOIN requests AS r
  ON f.day = r.day AND f.model = r.model
