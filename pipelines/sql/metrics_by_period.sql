-- Usage per (grain, period_start, model, region): the hourly and daily rollups of
-- metrics_minute (metrics_rollup), kept a year. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; grain is hour or day (UTC). Sums are exact; latency
-- percentiles come from the merged DDSketch bins (relative error <= 1%) and distinct users from
-- the united HLL sketches (about 1.6% standard error). estimated_cost_usd sums the windows'
-- costs (NULL when none has one); unpriced_window_count counts the windows without a cost, so a
-- partial cost is visible as such; backfill_window_count counts the reconciled windows.
SELECT
  grain,
  period_start,
  model,
  region,
  window_count,
  request_count,
  token_sum,
  prompt_token_sum,
  completion_token_sum,
  unsplit_token_sum,
  estimated_cost_usd,
  unpriced_window_count,
  backfill_window_count,
  latency_p50_ms,
  latency_p95_ms,
  latency_p99_ms,
  distinct_users_approx
FROM `{dataset}.metrics_rollup`
