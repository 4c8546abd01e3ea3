"""Run Kiln's 22 TPC-H queries on DuckDB over the CSV files `tpch gen` writes.

usage: python3 benches/tpch/duckdb_tpch.py --csv DIR --sf SF [--iterations N] [--threads N]
                                           [--compare ANSWERS_DIR ...]

Prints one line per query: number, best time in ms, row count. Used to
cross-check Kiln's answers and to compare engines in benches/README.md.
`--compare DIR` (repeatable) checks the `qN.csv` answers `tpch run --answers
DIR` wrote against DuckDB's: same rows (in order, or in another order among
ties), numbers within a relative 1e-9 (absolute 1e-4 near zero). Exits 1 on
any difference.
"""
import argparse
import csv
import pathlib
import sys
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
    parser.add_argument("--compare", action="append", default=[])
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
    print("query,duckdb_ms,rows" + "".join(f",{pathlib.Path(d).name}" for d in args.compare))
    differences = 0
    for n in range(1, 23):
        sql = (QUERIES / f"q{n}.sql").read_text().replace(":fraction", repr(0.0001 / args.sf))
        best = float("inf")
        rows = []
        for _ in range(args.iterations):
            start = time.perf_counter()
            rows = con.execute(sql).fetchall()
            best = min(best, time.perf_counter() - start)
        verdicts = []
        for answers in args.compare:
            problem = compare(rows, pathlib.Path(answers) / f"q{n}.csv")
            verdicts.append("same" if problem is None else "DIFFERENT")
            if problem is not None:
                differences += 1
                print(f"q{n} differs from {answers}: {problem}", file=sys.stderr)
        print(f"q{n},{best * 1000:.1f},{len(rows)}" + "".join(f",{v}" for v in verdicts))
    if differences:
        sys.exit(1)


def cell_equal(duck, kiln: str) -> bool:
    if duck is None:
        return kiln == ""
    if _numeric(duck):
        try:
            a, b = float(duck), float(kiln)
        except ValueError:
            return False
        return abs(a - b) <= max(1e-9 * max(abs(a), abs(b)), 1e-4)
    return str(duck) == kiln


def row_key(row):
    return tuple(
        f"{float(c):.2f}" if _numeric(c) else str(c) for c in row
    )


def compare(duck_rows, path: pathlib.Path):
    """None when the answer in `path` equals DuckDB's rows, else what differs."""
    if not path.exists():
        return f"{path} is missing"
    with path.open(newline="") as f:
        kiln_rows = list(csv.reader(f))[1:]
    if len(kiln_rows) != len(duck_rows):
        return f"{len(kiln_rows)} rows, DuckDB {len(duck_rows)}"

    def same(duck, kiln):
        return len(duck) == len(kiln) and all(cell_equal(d, k) for d, k in zip(duck, kiln))

    if all(same(d, k) for d, k in zip(duck_rows, kiln_rows)):
        return None
    # Rows tied on the ORDER BY keys may come in another order.
    duck_sorted = sorted(duck_rows, key=row_key)
    numeric = [_numeric(c) for c in duck_rows[0]]
    kiln_sorted = sorted(
        kiln_rows, key=lambda r: row_key([float(c) if n and c else c for c, n in zip(r, numeric)])
    )
    for d, k in zip(duck_sorted, kiln_sorted):
        if not same(d, k):
            return f"row {k} where DuckDB has {d}"
    return None


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) or type(value).__name__ == "Decimal"


if __name__ == "__main__":
    main()
