-- Usage per pseudonymous user per hour: the rows of usage_by_user_by_period (see
-- it for the definitions) with grain 'hour'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the hour (UTC).
SELECT period_start AS hour, * EXCEPT (grain, period_start)
FROM `{dataset}.usage_by_user_by_period`
WHERE grain = 'hour'
