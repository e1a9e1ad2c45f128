-- Share of requests carrying each gateway policy flag, per (grain, period_start, model), from
-- metrics_rollup. BigQuery Standard SQL; the dataset placeholder names the dataset of the
-- tables. grain is hour or day (UTC). flag_rate = flag_count / request_count; a request with
-- two flags counts once for each. Flags never raised in a period have no row (their rate is 0).
WITH requests AS (
  SELECT grain, period_start, model, SUM(request_count) AS request_count
  FROM `{dataset}.metrics_rollup`
  GROUP BY grain, period_start, model
),
flags AS (
  SELECT
    r.grain,
    r.period_start,
    r.model,
    f.key AS policy_flag,
    SUM(f.value) AS flag_count
  FROM `{dataset}.metrics_rollup` AS r, UNNEST(r.policy_flag_counts) AS f
  GROUP BY grain, period_start, model, policy_flag
)
SELECT
  f.grain,
  f.period_start,
  f.model,
  f.policy_flag,
  f.flag_count,
  r.request_count,
  SAFE_DIVIDE(f.flag_count, r.request_count) AS flag_rate
FROM flags AS f
JOIN requests AS r
  ON f.grain = r.grain AND f.period_start = r.period_start AND f.model = r.model
