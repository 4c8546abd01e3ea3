-- Loads the activity files that landed since the last run into the lake
-- table raw_activity. Each file is loaded exactly once (the manifest lives in
-- lake/_kiln/ingest/), so re-running, retrying or backfilling is safe.
-- schedule: 30 1 * * *
-- timezone: UTC
-- param: landing = sql/examples/data/landing/activity
-- retries: 2
-- retry_backoff: 1m
-- timeout: 30m

INGEST INTO raw_activity FROM '${landing}' FORMAT CSV;
