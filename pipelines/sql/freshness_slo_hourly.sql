-- The freshness SLO per hour: share of events visible within 120 s of ingestion: the rows of freshness_slo_by_period (see
-- it for the definitions) with grain 'hour'. BigQuery Standard SQL; the dataset placeholder
-- names the dataset of the tables; the hour (UTC).
SELECT period_start AS hour, * EXCEPT (grain, period_start)
FROM `{dataset}.freshness_slo_by_period`
WHERE grain = 'hour'
