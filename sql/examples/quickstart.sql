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

-- 3. Governance. Late orders arrive with two bad rows (a negative amount, an
--    unknown customer); the check moves failing rows to orders_quarantine
--    (with the names of the constraints they failed) and keeps the rest.
--    Results of every run are in kiln.check_results.
CREATE OR REPLACE EXTERNAL TABLE raw_late_orders (
    order_id BIGINT,
    customer_id BIGINT,
    amount DOUBLE,
    status VARCHAR,
    ordered_at TIMESTAMP
)
STORED AS JSON
LOCATION 'sql/examples/data/late_orders.json';

INSERT INTO orders SELECT order_id, customer_id, amount, ordered_at, status FROM raw_late_orders;

CREATE OR REPLACE CHECK orders_valid ON orders (
    EXPECT NOT NULL (order_id, customer_id, amount),
    EXPECT UNIQUE (order_id),
    EXPECT amount BETWEEN 0 AND 10000,
    EXPECT customer_id REFERENCES customers (customer_id)
) SEVERITY WARN ON FAILURE QUARANTINE INTO orders_quarantine;

CREATE OR REPLACE CHECK customers_valid ON customers (
    EXPECT NOT NULL (customer_id, country, plan),
    EXPECT UNIQUE (customer_id),
    EXPECT plan IN ('free', 'basic', 'pro'),
    EXPECT NO PII (name),
    EXPECT ROW_COUNT BETWEEN 1 AND 1000000
) SEVERITY ERROR;

RUN CHECKS ON orders;

RUN CHECK customers_valid;

SELECT order_id, customer_id, amount, failed_constraints FROM orders_quarantine ORDER BY order_id;

-- 4. Transform: one row of features per customer.
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

-- 5. Results.
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

-- 6. Train models on the features (each round is one Ballista job), evaluate
--    them, and predict. Models are versioned in lake/_models/. The defaults
--    need no tuning: features are standardized inside the model, linear
--    regression is solved exactly and logistic regression by L-BFGS.
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
  LABEL spend FEATURES (orders, age, returns)
  AS SELECT orders, age, returns, spend FROM training_set;

TRAIN MODEL OR REPLACE pro_model USING logistic_regression
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

-- 7. Features fitted with the model: TRANSFORM learns the scaling, the
--    countries and the median on the training rows, stores them in the model
--    card, and PREDICT / EVALUATE / predict() apply them to raw rows.
TRAIN MODEL OR REPLACE pro_risk USING logistic_regression
  OPTIONS (epochs = 30, learning_rate = 0.1, seed = 7)
  TRANSFORM (standard_scale(orders) AS orders, standard_scale(spend) AS spend,
             one_hot(country) AS country, impute(avg_order, 'median') AS avg_order)
  LABEL is_pro
  AS SELECT orders, spend, country, avg_order, plan = 'pro' AS is_pro FROM customer_features;

EVALUATE MODEL pro_risk
  AS SELECT orders, spend, country, avg_order, plan = 'pro' AS is_pro FROM customer_features;

PREDICT MODEL pro_risk
  AS SELECT customer_id, orders, spend, country, avg_order FROM customer_features
     ORDER BY customer_id LIMIT 5;
