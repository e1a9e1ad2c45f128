-- Latency percentiles per (hour, model), over all regions: the rows of latency_percentiles_by_period (see
-- it for the definitions) with grain 'hour'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the hour (UTC).
SELECT period_start AS hour, * EXCEPT (grain, period_start)
FROM `{dataset}.latency_percentiles_by_period`
WHERE grain = 'hour'
