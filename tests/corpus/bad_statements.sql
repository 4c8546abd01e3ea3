-- Statements that must fail cleanly: exit code 1, an "error:" line, no panic.
-- Each case is one statement; cases are separated by lines starting with "-- case".
-- case: empty select list
SELECT;
-- case: misspelled keyword
SELEC 1;
-- case: unterminated string
SELECT 'abc;
-- case: unterminated quoted identifier
SELECT "abc FROM t;
-- case: unbalanced parentheses
SELECT ((1 + 2);
-- case: trailing operator
SELECT 1 +;
-- case: unknown table
SELECT * FROM no_such_table;
-- case: unknown column
SELECT no_such_column;
-- case: unknown function
SELECT no_such_function(1);
-- case: wrong argument type
SELECT abs('x');
-- case: divide by zero
SELECT 1 / 0;
-- case: bad cast
SELECT CAST('abc' AS INT);
-- case: bad date
SELECT DATE '2026-13-45';
-- case: insert into unknown table
INSERT INTO nowhere VALUES (1);
-- case: drop unknown table
DROP TABLE nowhere;
-- case: describe unknown table
DESCRIBE nowhere;
-- case: create table with invalid name
CREATE TABLE "../escape" AS SELECT 1;
-- case: create table with slash in name
CREATE TABLE "a/b" AS SELECT 1;
-- case: ctas from unknown table
CREATE TABLE t AS SELECT * FROM nowhere;
-- case: partition by unknown column
CREATE TABLE t PARTITIONED BY (zzz) AS SELECT 1 AS a;
-- case: partition by every column
CREATE TABLE t PARTITIONED BY (a) AS SELECT 1 AS a;
-- case: external table over a missing file
CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/nonexistent/kiln/file.csv';
-- case: external table with unknown format
CREATE EXTERNAL TABLE x STORED AS XLSX LOCATION '/tmp';
-- case: external table with unknown option
CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/tmp' OPTIONS ('format.no_such_option' 'x');
-- case: temporary table
CREATE TEMPORARY TABLE t AS SELECT 1;
-- case: schema-qualified table
CREATE TABLE other.t AS SELECT 1;
-- case: recursive cte with two references to itself
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT a.i + 1 FROM n a JOIN n b ON a.i = b.i WHERE a.i < 3) SELECT * FROM n;
-- case: window aggregate with a filter
SELECT count(*) FILTER (WHERE a > 0) OVER () FROM t;
-- case: deeply nested expression
SELECT ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))));
-- case: negative limit
SELECT 1 LIMIT -1;
-- case: invalid regex
SELECT regexp_like('a', '(');
-- case: set unknown config
SET datafusion.no_such.option = 1;
-- case: union column mismatch
SELECT 1 UNION SELECT 1, 2;
-- case: aggregate in where
SELECT 1 WHERE sum(1) > 0;
-- case: window without over clause
SELECT row_number();
-- case: only a comment
-- nothing here
SELECT FROM;
-- case: garbage bytes
€€€ ☃ ;
-- case: update statement
UPDATE t SET a = 1;
-- case: delete statement
DELETE FROM t;
