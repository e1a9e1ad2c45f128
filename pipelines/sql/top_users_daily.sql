-- The 20 users with the highest estimated cost per day (ties broken by tokens, then user_key),
-- from usage_by_user_by_period. BigQuery Standard SQL; the dataset placeholder names the
-- dataset of the tables; the day is UTC (a DATE). user_key is the keyed pseudonym: telling who
-- it is takes the pseudonym key, which this data does not hold. rank 1 is the highest cost.
SELECT * EXCEPT (period_start)
FROM (
  SELECT
    DATE(DATETIME(period_start, 'UTC')) AS day,
    period_start,
    ROW_NUMBER() OVER (
      PARTITION BY period_start
      ORDER BY IFNULL(estimated_cost_usd, 0) DESC, token_sum DESC, user_key
    ) AS rank,
    user_key,
    request_count,
    token_sum,
    estimated_cost_usd,
    unpriced_rows,
    models
  FROM `{dataset}.usage_by_user_by_period`
  WHERE grain = 'day'
)
WHERE rank <= 20
