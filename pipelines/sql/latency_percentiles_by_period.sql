-- Latency percentiles per (grain, period_start, model), over all regions, from metrics_rollup.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of the tables. grain is hour
-- or day (UTC). Percentiles are recomputed from the rollups' merged DDSketch bins, never
-- averaged: bin counts are summed per index over the regions, then DDSketch's rank rule picks
-- the first bin whose running count exceeds q * (count - 1), and the bin's value is
-- 2 * gamma^index / (gamma + 1) with gamma = (1 + a) / (1 - a); index -2147483648 means 0 ms.
-- The relative accuracy a is a pipeline constant; MAX only picks it.
WITH bins AS (
  SELECT
    r.grain,
    r.period_start,
    r.model,
    b.`index` AS bin_index,
    SUM(b.`count`) AS bin_count,
    MAX(r.latency_sketch_relative_accuracy) AS relative_accuracy
  FROM `{dataset}.metrics_rollup` AS r, UNNEST(r.latency_sketch_bins) AS b
  GROUP BY grain, period_start, model, bin_index
),
running AS (
  SELECT
    grain,
    period_start,
    model,
    bin_index,
    relative_accuracy,
    SUM(bin_count) OVER (
      PARTITION BY grain, period_start, model ORDER BY bin_index
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS running_count,
    SUM(bin_count) OVER (PARTITION BY grain, period_start, model) AS total_count
  FROM bins
),
-- CAST(... AS FLOAT64): the rank is computed in floating point, as DDSketch does (a decimal
-- literal would be exact in some engines and pick a different bin at a rank boundary).
quantile_bins AS (
  SELECT
    grain,
    period_start,
    model,
    MAX(total_count) AS request_count,
    (1 + MAX(relative_accuracy)) / (1 - MAX(relative_accuracy)) AS gamma,
    MIN(IF(running_count > CAST(0.5 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p50_index,
    MIN(IF(running_count > CAST(0.95 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p95_index,
    MIN(IF(running_count > CAST(0.99 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p99_index
  FROM running
  GROUP BY grain, period_start, model
)
SELECT
  grain,
  period_start,
  model,
  request_count,
  IF(p50_index = -2147483648, 0.0, 2 * POW(gamma, p50_index) / (gamma + 1)) AS latency_p50_ms,
  IF(p95_index = -2147483648, 0.0, 2 * POW(gamma, p95_index) / (gamma + 1)) AS latency_p95_ms,
  IF(p99_index = -2147483648, 0.0, 2 * POW(gamma, p99_index) / (gamma + 1)) AS latency_p99_ms
FROM quantile_bins
