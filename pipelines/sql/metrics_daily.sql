-- Daily usage per (day, model, region), rolled up from metrics_minute (one row per window).
-- BigQuery Standard SQL; the dataset placeholder names the dataset of metrics_minute. Days are UTC.
-- Sums are exact. Latency percentiles are recomputed from the merged DDSketch bins, never
-- averaged: bin counts are summed per index over the day, then DDSketch's rank rule picks the
-- first bin whose running count exceeds q * (count - 1), and the bin's value is
-- 2 * gamma^index / (gamma + 1) with gamma = (1 + a) / (1 - a); index -2147483648 means 0 ms.
-- The relative accuracy a is a pipeline constant; MAX only picks it.
-- estimated_cost_usd sums the rows' costs (SUM skips rows without one: a model without a price
-- or rows from before the column existed); unpriced_window_count counts those rows, so a partial
-- cost is visible as such. backfill_window_count counts the reconciled windows of the day.
WITH totals AS (
  SELECT
    DATE(DATETIME(window_start, 'UTC')) AS day,
    model,
    region,
    COUNT(*) AS window_count,
    SUM(request_count) AS request_count,
    SUM(token_sum) AS token_sum,
    SUM(prompt_token_sum) AS prompt_token_sum,
    SUM(completion_token_sum) AS completion_token_sum,
    SUM(estimated_cost_usd) AS estimated_cost_usd,
    COUNTIF(estimated_cost_usd IS NULL) AS unpriced_window_count,
    COUNTIF(source = 'backfill') AS backfill_window_count,
    MAX(latency_sketch_relative_accuracy) AS relative_accuracy
  FROM `{dataset}.metrics_minute`
  GROUP BY day, model, region
),
bins AS (
  SELECT
    DATE(DATETIME(m.window_start, 'UTC')) AS day,
    m.model,
    m.region,
    b.`index` AS bin_index,
    SUM(b.`count`) AS bin_count
  FROM `{dataset}.metrics_minute` AS m, UNNEST(m.latency_sketch_bins) AS b
  GROUP BY day, model, region, bin_index
),
running AS (
  SELECT
    day,
    model,
    region,
    bin_index,
    SUM(bin_count) OVER (
      PARTITION BY day, model, region ORDER BY bin_index
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS running_count,
    SUM(bin_count) OVER (PARTITION BY day, model, region) AS total_count
  FROM bins
),
-- CAST(... AS FLOAT64): the rank is computed in floating point, as DDSketch does (a decimal
-- literal would be exact in some engines and pick a different bin at a rank boundary).
quantile_bins AS (
  SELECT
    day,
    model,
    region,
    MIN(IF(running_count > CAST(0.5 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p50_index,
    MIN(IF(running_count > CAST(0.95 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p95_index,
    MIN(IF(running_count > CAST(0.99 AS FLOAT64) * (total_count - 1), bin_index, NULL)) AS p99_index
  FROM running
  GROUP BY day, model, region
),
gammas AS (
  SELECT
    t.*,
    (1 + t.relative_accuracy) / (1 - t.relative_accuracy) AS gamma,
    q.p50_index,
    q.p95_index,
    q.p99_index
  FROM totals AS t
  LEFT JOIN quantile_bins AS q USING (day, model, region)
)
SELECT
  day,
  model,
  region,
  window_count,
  request_count,
  token_sum,
  prompt_token_sum,
  completion_token_sum,
  estimated_cost_usd,
  unpriced_window_count,
  backfill_window_count,
  IF(p50_index = -2147483648, 0.0, 2 * POW(gamma, p50_index) / (gamma + 1)) AS latency_p50_ms,
  IF(p95_index = -2147483648, 0.0, 2 * POW(gamma, p95_index) / (gamma + 1)) AS latency_p95_ms,
  IF(p99_index = -2147483648, 0.0, 2 * POW(gamma, p99_index) / (gamma + 1)) AS latency_p99_ms
FROM gammas
