-- Model utilisation per (day, model), over all regions, from metrics_minute.
-- BigQuery Standard SQL; the dataset placeholder names the dataset of metrics_minute. Days are UTC.
-- request_share and token_share are the model's share of that day's requests and tokens over
-- all models (SAFE_DIVIDE: NULL when the day has no tokens). active_minutes counts the minute
-- windows with at least one request; regions counts the regions that served the model.
WITH per_model AS (
  SELECT
    DATE(DATETIME(window_start, 'UTC')) AS day,
    model,
    SUM(request_count) AS request_count,
    SUM(token_sum) AS token_sum,
    SUM(prompt_token_sum) AS prompt_token_sum,
    SUM(completion_token_sum) AS completion_token_sum,
    COUNT(DISTINCT IF(request_count > 0, window_start, NULL)) AS active_minutes,
    COUNT(DISTINCT region) AS regions
  FROM `{dataset}.metrics_minute`
  GROUP BY day, model
)
SELECT
  day,
  model,
  request_count,
  token_sum,
  prompt_token_sum,
  completion_token_sum,
  active_minutes,
  regions,
  SAFE_DIVIDE(request_count, SUM(request_count) OVER (PARTITION BY day)) AS request_share,
  SAFE_DIVIDE(token_sum, SUM(token_sum) OVER (PARTITION BY day)) AS token_share
FROM per_model
