"""A standard Arrow Flight SQL client (ADBC) against `kiln scheduler --flight-sql`.

usage: flight_sql_client.py grpc://HOST:PORT TOKEN

Prints the per-region totals of the lake table `sales` as `region,total`
lines, then checks that a client without the token is refused.
"""
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql

HEADER = adbc_driver_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-kiln-token"


def main() -> None:
    uri, token = sys.argv[1], sys.argv[2]
    with flight_sql.connect(uri, db_kwargs={HEADER: token}) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY region"
            )
            for region, total in cur.fetchall():
                print(f"{region},{total}")
    try:
        with flight_sql.connect(uri) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        print("accepted without token")
    except Exception as e:  # the driver raises its own error types
        if "requires a token" in str(e):
            print("refused without token")
        else:
            print(f"unexpected error without token: {e}")


if __name__ == "__main__":
    main()
