-- Daily latency percentiles per (day, model), over all regions, from metrics_minute.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of metrics_minute. Days are UTC.
-- Same method as metrics_daily: bin counts are merged per index, then DDSketch's rank rule
-- (first bin whose running count exceeds q * (count - 1)) and bin value
-- 2 * gamma^index / (gamma + 1), gamma = (1 + a) / (1 - a); index -2147483648 means 0 ms.
WITH bins AS (
  SELECT
    DATE(DATETIME(m.window_start, 'UTC')) AS day,
    m.model,
    b.`index` AS bin_index,
    SUM(b.`count`) AS bin_count,
    MAX(m.latency_sketch_relative_accuracy) AS relative_accuracy
  FROM `{dataset}.metrics_minute` AS m, UNNEST(m.latency_sketch_bins) AS b
  GROUP BY day, model, bin_index
),
running AS (
  SELECT
    day,
    model,
    bin_index,
    relative_accuracy,
    SUM(bin_count) OVER (
      PARTITION BY day, model ORDER BY bin_index
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS running_count,
    SUM(bin_count) OVER (PARTITION BY day, model) AS total_count
  FROM bins
),
-- CAST(... AS FLOAT64): the rank is computed in floating point, as DDSketch does.
quantile_bins AS (
  SELECT
    day,
    model,
    MAX(total_count) AS request_count,
    (1 + MAX(relative_accuracy)) / (1 - MAX(relative_accuracy)) AS gamma,
    MIN(IF(running_count > CAST(0.5 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p50_index,
    MIN(IF(running_count > CAST(0.95 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p95_index,
    MIN(IF(running_count > CAST(0.99 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p99_index
  FROM running
  GROUP BY day, model
)
SELECT
  day,
  model,
  request_count,
  IF(p50_index = -2147483648, 0.0, 2 * POW(gamma, p50_index) / (gamma + 1)) AS latency_p50_ms,
  IF(p95_index = -2147483648, 0.0, 2 * POW(gamma, p95_index) / (gamma + 1)) AS latency_p95_ms,
  IF(p99_index = -2147483648, 0.0, 2 * POW(gamma, p99_index) / (gamma + 1)) AS latency_p99_ms
FROM quantile_bins
