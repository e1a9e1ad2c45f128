-- Share of requests carrying each policy flag per (hour, model): the rows of policy_flag_rates_by_period (see
-- it for the definitions) with grain 'hour'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the hour (UTC).
SELECT period_start AS hour, * EXCEPT (grain, period_start)
FROM `{dataset}.policy_flag_rates_by_period`
WHERE grain = 'hour'
