-- Model utilisation per (grain, period_start, model), over all regions, from metrics_rollup.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of the tables. grain is hour
-- or day (UTC). request_share and token_share are the model's share of the period's requests
-- and tokens over all models (SAFE_DIVIDE: NULL when the period has none). region_minutes counts
-- the metric windows with requests, summed over regions (a minute served in two regions counts
-- twice); regions counts the regions that served the model; estimated_cost_usd sums the
-- rollups' costs (unpriced windows left out).
WITH per_model AS (
  SELECT
    grain,
    period_start,
    model,
    SUM(request_count) AS request_count,
    SUM(token_sum) AS token_sum,
    SUM(prompt_token_sum) AS prompt_token_sum,
    SUM(completion_token_sum) AS completion_token_sum,
    SUM(estimated_cost_usd) AS estimated_cost_usd,
    SUM(window_count) AS region_minutes,
    COUNT(DISTINCT region) AS regions
  FROM `{dataset}.metrics_rollup`
  GROUP BY grain, period_start, model
)
SELECT
  grain,
  period_start,
  model,
  request_count,
  token_sum,
  prompt_token_sum,
  completion_token_sum,
  estimated_cost_usd,
  region_minutes,
  regions,
  SAFE_DIVIDE(request_count, SUM(request_count) OVER (PARTITION BY grain, period_start))
    AS request_share,
  SAFE_DIVIDE(token_sum, SUM(token_sum) OVER (PARTITION BY grain, period_start)) AS token_share
FROM per_model
