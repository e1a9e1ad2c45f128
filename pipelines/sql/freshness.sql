-- How long after its window closed each metrics row was emitted (its latest pane).
-- BigQuery Standard SQL; the dataset placeholder names the dataset of metrics_minute.
-- freshness_s = emitted_at - window_end in seconds (negative for EARLY panes). A reconciled row
-- (source = 'backfill') was emitted by the backfill, so its freshness is the backfill's delay,
-- not the streaming job's: measure the freshness SLO on source = 'streaming' (or NULL, rows
-- from before the column existed). newest_event_lag_s = emitted_at - latest_event_time: how old
-- the freshest event in the row was when it was emitted (NULL for rows from before the column).
SELECT
  window_start,
  window_end,
  model,
  region,
  pane_timing,
  pane_index,
  is_final,
  source,
  emitted_at,
  latest_event_time,
  TIMESTAMP_DIFF(emitted_at, window_end, MICROSECOND) / 1000000 AS freshness_s,
  TIMESTAMP_DIFF(emitted_at, latest_event_time, MICROSECOND) / 1000000 AS newest_event_lag_s
FROM `{dataset}.metrics_minute`
