-- Usage per (grain, period_start, model, model_version), from usage_hourly. BigQuery Standard
-- SQL; the dataset placeholder names the dataset of the tables. grain is hour or day, periods
-- in UTC. model_version is empty when the gateway reported none. users counts distinct user
-- keys exactly (usage_hourly holds one row per user and hour).
WITH periods AS (
  SELECT
    g.grain,
    TIMESTAMP_SECONDS(DIV(UNIX_SECONDS(u.hour_start), g.seconds) * g.seconds) AS period_start,
    u.* EXCEPT (hour_start)
  FROM `{dataset}.usage_hourly` AS u
  CROSS JOIN UNNEST([STRUCT('hour' AS grain, 3600 AS seconds), STRUCT('day' AS grain, 86400 AS seconds)]) AS g
)
SELECT
  grain,
  period_start,
  model,
  model_version,
  SUM(request_count) AS request_count,
  SUM(token_sum) AS token_sum,
  SUM(prompt_token_sum) AS prompt_token_sum,
  SUM(completion_token_sum) AS completion_token_sum,
  SUM(estimated_cost_usd) AS estimated_cost_usd,
  COUNTIF(estimated_cost_usd IS NULL) AS unpriced_rows,
  SAFE_DIVIDE(SUM(latency_ms_sum), SUM(request_count)) AS latency_mean_ms,
  COUNT(DISTINCT user_key) AS users
FROM periods
GROUP BY grain, period_start, model, model_version
