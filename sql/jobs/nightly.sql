-- The nightly pipeline for one day of customer activity (${run_date}):
-- check the day's rows (quarantining bad ones), publish the day's partition
-- of activity_features (re-running a date replaces exactly that partition),
-- continue training the churn model from its last version on the new day,
-- evaluate it, and score the day's customers.
-- schedule: 0 2 * * *
-- timezone: UTC
-- catchup: latest
-- depends_on: ingest_activity
-- param: epochs = 10
-- retries: 2
-- retry_backoff: 5m
-- timeout: 1h

-- 1. Governance: the day's rows must be complete and plausible. Rows with
--    impossible values go to activity_quarantine; ERROR constraints stop the run.
CREATE OR REPLACE CHECK activity_day ON raw_activity WHERE day = DATE '${run_date}' (
    EXPECT NOT NULL (customer_id, country, plan),
    EXPECT sessions BETWEEN 0 AND 1000,
    EXPECT minutes BETWEEN 0 AND 1440,
    EXPECT plan IN ('free', 'basic', 'pro'),
    EXPECT ROW_COUNT BETWEEN 1 AND 10000000 SEVERITY ERROR
) SEVERITY WARN ON FAILURE QUARANTINE INTO activity_quarantine;
RUN CHECK activity_day;

-- 2. Features: one partition per day, written idempotently.
CREATE TABLE IF NOT EXISTS activity_features PARTITIONED BY (day) AS
SELECT customer_id, country, plan, sessions, minutes, purchases, churned, day
FROM raw_activity WHERE false;

INSERT OVERWRITE activity_features PARTITION (day = '${run_date}')
SELECT customer_id, country, plan, sessions, minutes, purchases, churned
FROM raw_activity
WHERE day = DATE '${run_date}';

-- 3. Incremental learning: the first night trains v1; each later night
--    continues from the latest version on the new day's rows (the card links
--    the versions; the TRANSFORM statistics of v1 are kept).
TRAIN MODEL churn USING logistic_regression
  OPTIONS (warm_start = true, epochs = ${epochs}, learning_rate = 0.1, seed = 7)
  TRANSFORM (standard_scale(sessions) AS sessions, standard_scale(minutes) AS minutes,
             standard_scale(purchases) AS purchases, one_hot(plan) AS plan)
  LABEL churned
  AS SELECT sessions, minutes, purchases, plan, churned
     FROM activity_features WHERE day = DATE '${run_date}';

EVALUATE MODEL churn
  AS SELECT sessions, minutes, purchases, plan, churned
     FROM activity_features WHERE day = DATE '${run_date}';

-- 4. Scores for the day, one partition per day.
CREATE TABLE IF NOT EXISTS churn_scores PARTITIONED BY (day) AS
SELECT customer_id, CAST(NULL AS DOUBLE) AS churn_probability, day
FROM activity_features WHERE false;

INSERT OVERWRITE churn_scores PARTITION (day = '${run_date}')
SELECT customer_id, probability AS churn_probability
FROM (PREDICT MODEL churn
      AS SELECT customer_id, sessions, minutes, purchases, plan
         FROM activity_features WHERE day = DATE '${run_date}');
