-- Kiln quickstart: ingest raw CSV and JSON from sql/examples/data, clean and
-- join them into Parquet tables in the lake, and query the result.
-- Run from the repository root:  kiln run sql/examples/quickstart.sql
-- (relative LOCATIONs are relative to the working directory).

-- 1. Register the raw files. CSV with inferred types; JSON with an explicit schema.
CREATE OR REPLACE EXTERNAL TABLE raw_customers
STORED AS CSV
LOCATION 'sql/examples/data/customers.csv'
OPTIONS ('format.has_header' 'true');

CREATE OR REPLACE EXTERNAL TABLE raw_orders (
    order_id BIGINT,
    customer_id BIGINT,
    amount DOUBLE,
    status VARCHAR,
    ordered_at TIMESTAMP
)
STORED AS JSON
LOCATION 'sql/examples/data/orders.json';

-- 2. Ingest into lake tables (Parquet, published atomically).
CREATE OR REPLACE TABLE customers AS
SELECT customer_id, name, country, age, CAST(signup_date AS DATE) AS signup_date, plan
FROM raw_customers;

CREATE OR REPLACE TABLE orders PARTITIONED BY (status) AS
SELECT order_id, customer_id, amount, ordered_at, status
FROM raw_orders;

-- 3. Transform: one row of features per customer.
CREATE OR REPLACE TABLE customer_features AS
SELECT
    c.customer_id,
    c.country,
    c.plan,
    c.age,
    count(o.order_id) AS orders,
    coalesce(sum(o.amount), 0) AS spend,
    coalesce(avg(o.amount), 0) AS avg_order,
    sum(CASE WHEN o.status = 'returned' THEN 1 ELSE 0 END) AS returns,
    max(o.ordered_at) AS last_order_at
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.customer_id
GROUP BY c.customer_id, c.country, c.plan, c.age;

-- 4. Results.
SELECT plan, count(*) AS customers, round(avg(orders), 2) AS avg_orders, round(sum(spend), 2) AS revenue
FROM customer_features
GROUP BY plan
ORDER BY revenue DESC;

SELECT country, customer_id, round(spend, 2) AS spend, rank
FROM (
    SELECT country, customer_id, spend,
           rank() OVER (PARTITION BY country ORDER BY spend DESC) AS rank
    FROM customer_features
) ranked
WHERE rank <= 2
ORDER BY country, rank;

-- 5. Train models on the features (each epoch is one Ballista job), evaluate
--    them, and predict. Models are versioned in lake/_models/.
CREATE OR REPLACE TABLE training_set AS
SELECT
    CAST(orders AS DOUBLE) AS orders,
    spend / 100.0 AS spend,
    CAST(age AS DOUBLE) / 100.0 AS age,
    CAST(returns AS DOUBLE) AS returns,
    plan,
    plan = 'pro' AS is_pro
FROM customer_features;

TRAIN MODEL OR REPLACE spend_model USING linear_regression
  OPTIONS (solver = 'normal')
  LABEL spend FEATURES (orders, age, returns)
  AS SELECT orders, age, returns, spend FROM training_set;

TRAIN MODEL OR REPLACE pro_model USING logistic_regression
  OPTIONS (epochs = 20, learning_rate = 0.1, seed = 7)
  LABEL is_pro FEATURES (orders, spend, returns)
  AS SELECT orders, spend, returns, is_pro FROM training_set;

TRAIN MODEL OR REPLACE plan_model USING mlp
  OPTIONS (hidden_units = [16], epochs = 30, learning_rate = 0.05, seed = 7)
  LABEL plan FEATURES (orders, spend, returns)
  AS SELECT orders, spend, returns, plan FROM training_set;

EVALUATE MODEL spend_model AS SELECT orders, age, returns, spend FROM training_set;

EVALUATE MODEL pro_model AS SELECT orders, spend, returns, is_pro FROM training_set;

SELECT plan, predict('plan_model', orders, spend, returns) AS predicted_plan, count(*) AS customers
FROM training_set
GROUP BY plan, predicted_plan
ORDER BY plan, predicted_plan;
