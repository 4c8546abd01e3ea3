//! Training throughput through Kiln (every epoch a Ballista job).
//!
//! ```text
//! train gen --rows 10000000 --lake /tmp/kiln-train   # synthetic Parquet table, 32 features
//! train gen --rows 1000000 --features 784 --classes 10 --float32 --chunk 50000 --lake /tmp/kmlp
//! train run --lake /tmp/kiln-train                    # 1 epoch of logistic_regression
//! ```
//! `run` prints rows/s and the process's peak resident memory (VmHWM), so run
//! `gen` separately: generation's memory would otherwise count.

use std::time::Instant;

use clap::{Parser, Subcommand};
use kiln_benches::peak_rss_mib;
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
        #[arg(long, default_value_t = 32)]
        features: usize,
        /// 2: label `f0 + f1 - f2 > 0`; more: `f0`'s range cut into this many equal classes.
        #[arg(long, default_value_t = 2)]
        classes: u32,
        /// Binary label only: `f0 + f1 - f2 + noise·u > 0` with `u` a hashed
        /// value in [-0.5, 0.5) that is not a feature, so the classes overlap
        /// (0.86: the best linear models reach about 0.79 accuracy).
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
        /// Store features as FLOAT (f32) instead of DOUBLE: halves the table for wide runs.
        #[arg(long)]
        float32: bool,
        /// Rows per INSERT while generating (wide tables need smaller slices).
        #[arg(long, default_value_t = 1_000_000)]
        chunk: u64,
        #[arg(long, default_value = "target/kiln-train")]
        lake: String,
    },
    Run {
        #[arg(long, default_value = "target/kiln-train")]
        lake: String,
        #[arg(long, default_value = "logistic_regression")]
        model: String,
        /// The OPTIONS of TRAIN MODEL ("" for the defaults).
        #[arg(
            long,
            default_value = "epochs = 1, batch_size = 1024, learning_rate = 0.05"
        )]
        options: String,
    },
}

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    match Cli::parse().command {
        Command::Gen {
            rows,
            features,
            classes,
            noise,
            float32,
            chunk,
            lake,
        } => {
            if classes < 2 {
                return Err(datafusion::error::DataFusionError::Plan(
                    "--classes must be at least 2".into(),
                ));
            }
            let feature_type = if float32 { "FLOAT" } else { "DOUBLE" };
            let mut options = SessionOptions::new(lake);
            options.progress = false;
            let kiln = kiln_cluster::open(options).await?;
            let columns: Vec<String> = (0..features)
                .map(|k| {
                    format!(
                        "CAST(CAST((n * 2654435761 + {}) % 1000003 AS DOUBLE) / 1000003.0 - 0.5 AS {feature_type}) AS f{k}",
                        k * 40503 + 17
                    )
                })
                .collect();
            let start = Instant::now();
            // In slices: one list of `rows` numbers would be materialized whole.
            let label = if classes == 2 {
                format!(
                    "CASE WHEN f0 + f1 - f2 + {noise} * (CAST((n * 2246822519 + 99991) % 999983 AS DOUBLE) \
                     / 999983.0 - 0.5) > 0 THEN 1 ELSE 0 END"
                )
            } else {
                format!("CAST(floor((CAST(f0 AS DOUBLE) + 0.5) * {classes}) AS BIGINT)")
            };
            let mut first = true;
            let mut from = 0;
            while from < rows {
                let to = (from + chunk).min(rows);
                let select = format!(
                    "SELECT {}, label FROM (SELECT *, {label} AS label FROM (SELECT n, {} FROM (SELECT unnest(range({from}, {to})) AS n)))",
                    (0..features).map(|k| format!("f{k}")).collect::<Vec<_>>().join(", "),
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
            let kiln = kiln_cluster::open(session_options).await?;
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
            let options = if options.trim().is_empty() {
                String::new()
            } else {
                format!("OPTIONS ({options})")
            };
            let trained = kiln
                .execute(&format!(
                    "TRAIN MODEL OR REPLACE bench USING {model} {options} LABEL label AS SELECT * FROM train_data"
                ))
                .await?;
            eprintln!("{}", trained.message.unwrap_or_default());
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
