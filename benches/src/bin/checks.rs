//! A governance check with 8 constraints over a lake table, through Kiln.
//!
//! ```text
//! checks gen --rows 10000000 --lake /tmp/kiln-checks   # the events table
//! checks run --lake /tmp/kiln-checks                   # CREATE CHECK + timed RUN CHECKs
//! ```
//! `run` prints the scans in the check's physical plan (must be 1), the
//! measuring query (for the DuckDB comparison in `benches/checks/`), and
//! rows/s of `RUN CHECK`.

use std::time::Instant;

use clap::{Parser, Subcommand};
use kiln_sql::SessionOptions;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Gen {
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value = "target/kiln-checks")]
        lake: String,
    },
    Run {
        #[arg(long, default_value = "target/kiln-checks")]
        lake: String,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

const CHECK: &str = "CREATE OR REPLACE CHECK events_ok ON events (
    EXPECT NOT NULL (id, user_id),
    EXPECT UNIQUE (id),
    EXPECT amount BETWEEN 0 AND 1000,
    EXPECT country IN ('NL', 'DE', 'FR', 'US', 'GB'),
    EXPECT status MATCHES '^[a-z]+$',
    EXPECT ROW (amount > 0 OR status = 'refund'),
    EXPECT ROW_COUNT BETWEEN 1 AND 1000000000,
    EXPECT FRESHNESS (ts) < INTERVAL '36500 days'
) SEVERITY WARN";

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    match Cli::parse().command {
        Command::Gen { rows, lake } => {
            let session = kiln_cluster::open(SessionOptions::new(&lake)).await?;
            session.execute("DROP TABLE IF EXISTS events").await?;
            let chunk = 1_000_000u64;
            let mut start = 0;
            while start < rows {
                let end = (start + chunk).min(rows);
                let select = format!(
                    "SELECT n AS id, n % 100003 AS user_id, CAST(n % 10007 AS DOUBLE) / 10.0 AS amount, \
                     CASE n % 5 WHEN 0 THEN 'NL' WHEN 1 THEN 'DE' WHEN 2 THEN 'FR' WHEN 3 THEN 'US' ELSE 'GB' END AS country, \
                     CASE n % 3 WHEN 0 THEN 'paid' WHEN 1 THEN 'open' ELSE 'refund' END AS status, \
                     to_timestamp_seconds(1793491200 + n) AS ts \
                     FROM (SELECT unnest(range({start}, {end})) AS n)"
                );
                let sql = if start == 0 {
                    format!("CREATE TABLE events AS {select}")
                } else {
                    format!("INSERT INTO events {select}")
                };
                session.execute(&sql).await?;
                start = end;
                eprintln!("generated {end} rows");
            }
        }
        Command::Run { lake, repeat } => {
            let mut options = SessionOptions::new(&lake);
            options.progress = false;
            let session = kiln_cluster::open(options).await?;
            session.execute(CHECK).await?;
            let check = session
                .lake()
                .catalog()
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let query = kiln_sql::exec::checks::check_query(&check.checks["events_ok"]);
            let plan = session.execute(&format!("EXPLAIN {query}")).await?;
            let text =
                datafusion::arrow::util::pretty::pretty_format_batches(&plan.batches)?.to_string();
            let physical: String = text
                .lines()
                .skip_while(|l| !l.contains("physical_plan"))
                .take_while(|l| !l.contains("distributed_plan"))
                .collect::<Vec<_>>()
                .join("\n");
            let scans = physical.matches("DataSourceExec").count();
            println!("measuring query: {query}");
            println!("scans in the physical plan: {scans}");
            let rows = session.execute("SELECT count(*) FROM events").await?;
            let rows = datafusion::arrow::util::pretty::pretty_format_batches(&rows.batches)?
                .to_string()
                .lines()
                .nth(3)
                .and_then(|l| l.trim_matches(|c| c == '|' || c == ' ').parse::<f64>().ok())
                .unwrap_or(0.0);
            let mut times = vec![];
            for i in 0..repeat {
                let start = Instant::now();
                let result = session.execute("RUN CHECK events_ok").await?;
                let secs = start.elapsed().as_secs_f64();
                times.push(secs);
                println!(
                    "run {}: {:.3} s, {:.1} M rows/s, {} result rows",
                    i + 1,
                    secs,
                    rows / secs / 1e6,
                    result.row_count()
                );
            }
            times.sort_by(f64::total_cmp);
            println!(
                "best {:.3} s ({:.1} M rows/s) over {rows} rows",
                times[0],
                rows / times[0] / 1e6
            );
        }
    }
    Ok(())
}
