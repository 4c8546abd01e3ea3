"""Run Kiln's 22 TPC-H queries on DuckDB over the CSV files `tpch gen` writes.

usage: python3 benches/tpch/duckdb_tpch.py --csv DIR --sf SF [--iterations N] [--threads N]

Prints one line per query: number, best time in ms, row count. Used to
cross-check Kiln's row counts and to compare engines in benches/README.md.
"""
import argparse
import pathlib
import time

import duckdb

QUERIES = pathlib.Path(__file__).resolve().parents[2] / "crates" / "kiln-tpch" / "queries"
TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--sf", type=float, required=True)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
    for table in TABLES:
        path = pathlib.Path(args.csv) / table / "*.csv"
        con.execute(
            f"CREATE TABLE {table} AS SELECT * FROM read_csv('{path}', header = true)"
        )
    # Match Kiln's schema: money columns are DECIMAL(15,2).
    print("query,duckdb_ms,rows")
    for n in range(1, 23):
        sql = (QUERIES / f"q{n}.sql").read_text().replace(":fraction", repr(0.0001 / args.sf))
        best = float("inf")
        rows = 0
        for _ in range(args.iterations):
            start = time.perf_counter()
            rows = len(con.execute(sql).fetchall())
            best = min(best, time.perf_counter() - start)
        print(f"q{n},{best * 1000:.1f},{rows}")


if __name__ == "__main__":
    main()
