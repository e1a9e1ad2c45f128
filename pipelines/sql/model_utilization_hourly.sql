-- Model utilisation per (hour, model): the rows of model_utilization_by_period (see
-- it for the definitions) with grain 'hour'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the hour (UTC).
SELECT period_start AS hour, * EXCEPT (grain, period_start)
FROM `{dataset}.model_utilization_by_period`
WHERE grain = 'hour'
