//! Training throughput through Kiln (every epoch a Ballista job).
//!
//! ```text
//! train gen --rows 10000000 --lake /tmp/kiln-train   # synthetic Parquet table, 32 features
//! train run --lake /tmp/kiln-train                    # 1 epoch of logistic_regression
//! ```
//! `run` prints rows/s and the process's peak resident memory (VmHWM), so run
//! `gen` separately: generation's memory would otherwise count.

use std::time::Instant;

use clap::{Parser, Subcommand};
use kiln_sql::{KilnSession, SessionOptions};

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
        #[arg(long, default_value_t = 32)]
        features: usize,
        #[arg(long, default_value = "target/kiln-train")]
        lake: String,
    },
    Run {
        #[arg(long, default_value = "target/kiln-train")]
        lake: String,
        #[arg(long, default_value = "logistic_regression")]
        model: String,
        #[arg(
            long,
            default_value = "epochs = 1, batch_size = 1024, learning_rate = 0.05"
        )]
        options: String,
    },
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    match Cli::parse().command {
        Command::Gen {
            rows,
            features,
            lake,
        } => {
            let mut options = SessionOptions::new(lake);
            options.progress = false;
            let kiln = KilnSession::open(options).await?;
            let columns: Vec<String> = (0..features)
                .map(|k| {
                    format!(
                        "CAST((n * 2654435761 + {}) % 1000003 AS DOUBLE) / 1000003.0 - 0.5 AS f{k}",
                        k * 40503 + 17
                    )
                })
                .collect();
            let start = Instant::now();
            // In slices of 1M rows: one list of `rows` numbers would be materialized whole.
            let chunk = 1_000_000u64;
            let mut first = true;
            let mut from = 0;
            while from < rows {
                let to = (from + chunk).min(rows);
                let select = format!(
                    "SELECT *, CASE WHEN f0 + f1 - f2 > 0 THEN 1 ELSE 0 END AS label FROM (SELECT {} FROM (SELECT unnest(range({from}, {to})) AS n))",
                    columns.join(", ")
                );
                let sql = if first {
                    format!("CREATE OR REPLACE TABLE train_data AS {select}")
                } else {
                    format!("INSERT INTO train_data {select}")
                };
                kiln.execute(&sql).await?;
                first = false;
                from = to;
            }
            println!(
                "generated {rows} rows x {features} features in {:.1?}",
                start.elapsed()
            );
        }
        Command::Run {
            lake,
            model,
            options,
        } => {
            let mut session_options = SessionOptions::new(lake);
            session_options.progress = false;
            let kiln = KilnSession::open(session_options).await?;
            let rows = kiln.execute("SELECT count(*) FROM train_data").await?;
            let count = datafusion::arrow::compute::cast(
                rows.batches[0].column(0),
                &datafusion::arrow::datatypes::DataType::Float64,
            )?;
            let count = count
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
                .map_or(0.0, |a| a.value(0));
            let start = Instant::now();
            kiln.execute(&format!(
                "TRAIN MODEL OR REPLACE bench USING {model} OPTIONS ({options}) LABEL label AS SELECT * FROM train_data"
            ))
            .await?;
            let secs = start.elapsed().as_secs_f64();
            let peak = peak_rss_mib();
            let metrics = kiln
                .execute("EVALUATE MODEL bench AS SELECT * FROM train_data LIMIT 100000")
                .await?;
            let mut accuracy = String::new();
            for batch in &metrics.batches {
                let names = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>();
                let values = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Float64Array>();
                if let (Some(names), Some(values)) = (names, values) {
                    for i in 0..batch.num_rows() {
                        if names.value(i) == "accuracy" {
                            accuracy = format!("{:.4}", values.value(i));
                        }
                    }
                }
            }
            println!(
                "model,rows,seconds,rows_per_s,peak_rss_mib,accuracy_first_100k\n{model},{count},{secs:.2},{:.0},{peak:.0},{accuracy}",
                count / secs
            );
        }
    }
    Ok(())
}
