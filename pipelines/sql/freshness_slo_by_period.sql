-- The freshness SLO per (grain, period_start): of the events of the period's metric windows,
-- the share that became visible in the warehouse within 120 s of their ingestion (the seed
-- design's "99% of metrics visible within 2 minutes"), from freshness_minute. BigQuery Standard
-- SQL; the dataset placeholder names the dataset of the tables. grain is hour or day, periods
-- in UTC (computed on epoch seconds, so no session time zone moves them).
-- An event's freshness is the commit time of the first metrics_minute row counting it minus its
-- ingestion time, bucketed (latency_s: whole seconds below 600 s); an event counts as within
-- the SLO when its bucket is below 120, i.e. it was visible in under 120 s (to the second).
-- freshness_p50_s / _p99_s: nearest rank (the first bucket whose running count reaches
-- q * events), the bucket's lower bound. Events the streaming job dropped as too late reach a
-- metric row only when a reconciliation counts them, with their (long) freshness then.
WITH per_period AS (
  SELECT
    g.grain,
    TIMESTAMP_SECONDS(DIV(UNIX_SECONDS(f.window_start), g.seconds) * g.seconds) AS period_start,
    f.latency_s,
    SUM(f.events) AS events
  FROM `{dataset}.freshness_minute` AS f
  CROSS JOIN UNNEST([STRUCT('hour' AS grain, 3600 AS seconds), STRUCT('day' AS grain, 86400 AS seconds)]) AS g
  GROUP BY grain, period_start, latency_s
),
running AS (
  SELECT
    grain,
    period_start,
    latency_s,
    events,
    SUM(events) OVER (
      PARTITION BY grain, period_start ORDER BY latency_s
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS running_events,
    SUM(events) OVER (PARTITION BY grain, period_start) AS total_events
  FROM per_period
),
summary AS (
  SELECT
    grain,
    period_start,
    MAX(total_events) AS events,
    SUM(IF(latency_s < 120, events, 0)) AS events_within_slo,
    MIN(IF(running_events >= CEIL(CAST(0.5 AS FLOAT64) * total_events), latency_s, NULL))
      AS freshness_p50_s,
    MIN(IF(running_events >= CEIL(CAST(0.99 AS FLOAT64) * total_events), latency_s, NULL))
      AS freshness_p99_s,
    MAX(latency_s) AS freshness_max_s
  FROM running
  GROUP BY grain, period_start
)
SELECT
  grain,
  period_start,
  events,
  events_within_slo,
  SAFE_DIVIDE(events_within_slo, events) AS slo_compliance,
  CAST(0.99 AS FLOAT64) AS slo_target,
  SAFE_DIVIDE(events_within_slo, events) >= 0.99 AS slo_met,
  freshness_p50_s,
  freshness_p99_s,
  freshness_max_s
FROM summary
