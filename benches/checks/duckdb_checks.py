"""The 8-constraint check of `checks run` as one DuckDB query over the same Parquet files.

usage: python3 benches/checks/duckdb_checks.py --lake DIR [--repeat N] [--threads N]

Measures what Kiln's check measures (NULL counts, duplicates, failing rows of
BETWEEN / IN / MATCHES / ROW, the row count and the newest timestamp) in one
scan of the published snapshot of `events`, and prints the best time and
rows/s, for the side-by-side in benches/README.md.
"""
import argparse
import glob
import time

import duckdb

QUERY = """
SELECT
  count(*) FILTER (WHERE id IS NULL) AS null_id,
  count(*) FILTER (WHERE user_id IS NULL) AS null_user,
  count(id) - count(DISTINCT id) AS duplicate_ids,
  count(*) FILTER (WHERE amount IS NOT NULL AND NOT (amount BETWEEN 0 AND 1000)) AS amount_out,
  count(*) FILTER (WHERE country IS NOT NULL AND country NOT IN ('NL', 'DE', 'FR', 'US', 'GB')) AS bad_country,
  count(*) FILTER (WHERE status IS NOT NULL AND NOT regexp_matches(status, '^[a-z]+$')) AS bad_status,
  count(*) FILTER (WHERE NOT coalesce(amount > 0 OR status = 'refund', false)) AS bad_rows,
  count(*) AS row_count,
  max(ts) AS newest
FROM read_parquet(?)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    snapshots = sorted(glob.glob(f"{args.lake}/events/v*"), key=lambda p: int(p.rsplit("v", 1)[1]))
    files = glob.glob(f"{snapshots[-1]}/**/*.parquet", recursive=True)
    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
    best = None
    for i in range(args.repeat):
        start = time.perf_counter()
        row = con.execute(QUERY, [files]).fetchone()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
        print(f"run {i + 1}: {elapsed:.3f} s, {row[7] / elapsed / 1e6:.1f} M rows/s, measures {row}")
    print(f"best {best:.3f} s ({row[7] / best / 1e6:.1f} M rows/s) over {row[7]} rows, duckdb {duckdb.__version__}")


if __name__ == "__main__":
    main()
