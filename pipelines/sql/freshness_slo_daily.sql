-- The freshness SLO per day: share of events visible within 120 s of ingestion: the rows of freshness_slo_by_period (see
-- it for the definitions) with grain 'day'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the day (UTC, a DATE).
SELECT DATE(DATETIME(period_start, 'UTC')) AS day, * EXCEPT (grain, period_start)
FROM `{dataset}.freshness_slo_by_period`
WHERE grain = 'day'
