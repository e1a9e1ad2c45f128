-- Usage per pseudonymous user per day: the rows of usage_by_user_by_period (see
-- it for the definitions) with grain 'day'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the day (UTC, a DATE).
SELECT DATE(DATETIME(period_start, 'UTC')) AS day, * EXCEPT (grain, period_start)
FROM `{dataset}.usage_by_user_by_period`
WHERE grain = 'day'
