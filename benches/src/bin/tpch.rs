//! TPC-H through Kiln (embedded Ballista) and plain DataFusion, in one process.
//!
//! ```text
//! tpch gen --sf 1 --dir target/tpch            # CSV only (for other engines)
//! tpch run --sf 1 --dir target/tpch -i 3       # generate + ingest if needed, then time
//! ```
//! `run` ingests the CSV into a Kiln lake (`CREATE TABLE AS`, Parquet), then
//! runs each query `--iterations` times on Kiln, on a plain DataFusion
//! `SessionContext` (default options) and on one with the options Kiln's
//! session plans with, all over the same Parquet files, and prints the best
//! time of each, the ratio Kiln / DataFusion, and row counts (which must agree).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use kiln_benches::{current_rss_mib, peak_rss_mib, reset_peak_rss};
use kiln_sql::catalog::lake::TableEntry;
use kiln_sql::{KilnSession, SessionOptions};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate CSV files only.
    Gen {
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long, default_value = "target/tpch")]
        dir: PathBuf,
    },
    /// Generate and ingest if needed, then time all queries on both engines.
    Run {
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long, default_value = "target/tpch")]
        dir: PathBuf,
        #[arg(long, short = 'i', default_value_t = 3, value_parser = at_least_one)]
        iterations: usize,
        /// Comma-separated query numbers (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Partitions per stage on both engines (default: cores).
        #[arg(long)]
        partitions: Option<usize>,
        /// Write per-query results as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// `KEY=VALUE` to `SET` in the Kiln session before the queries (repeatable).
        #[arg(long = "kiln-set")]
        kiln_set: Vec<String>,
        /// Run Kiln's side on this cluster (`df://host:port`; its scheduler
        /// and executors serve the same lake) instead of the embedded one.
        #[arg(long)]
        cluster: Option<String>,
        /// The cluster's token.
        #[arg(long, env = "KILN_TOKEN")]
        token: Option<String>,
        /// Write Kiln's answer to each query here as `qN.csv` (compared with
        /// DuckDB's by `benches/tpch/duckdb_tpch.py --compare`).
        #[arg(long)]
        answers: Option<PathBuf>,
    },
    /// One trivial statement (`SELECT 1`) run `iterations` times in one
    /// session, on Kiln and on plain DataFusion: median and mean latency.
    Latency {
        #[arg(long, default_value = "target/tpch")]
        dir: PathBuf,
        #[arg(long, short = 'i', default_value_t = 200, value_parser = at_least_one)]
        iterations: usize,
        /// As for `run`.
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, env = "KILN_TOKEN")]
        token: Option<String>,
    },
    /// Sorts and windows over `orders` (string and integer keys) on both
    /// engines: best time and peak RSS growth of each.
    Sorts {
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long, default_value = "target/tpch")]
        dir: PathBuf,
        #[arg(long, short = 'i', default_value_t = 1, value_parser = at_least_one)]
        iterations: usize,
        /// Write the results as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// As for `run` (Kiln's peak is then this client's; the executors'
        /// memory is theirs to report).
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, env = "KILN_TOKEN")]
        token: Option<String>,
    },
}

/// The `sorts` workloads: (name, Kiln statement, DataFusion statement).
/// A sort written to a table is `CREATE TABLE AS` on Kiln and `COPY` to
/// Parquet on DataFusion: both sort and write the same rows.
fn sort_workloads(out: &Path) -> Vec<(&'static str, String, String)> {
    let copy = |sql: &str| {
        format!(
            "COPY ({sql}) TO '{}' STORED AS PARQUET",
            out.join("sorted").display()
        )
    };
    let sorted_strings = "SELECT o_comment FROM orders ORDER BY o_comment";
    let window = |key: &str| {
        format!("SELECT sum(rn) FROM (SELECT row_number() OVER (ORDER BY {key}) AS rn FROM orders)")
    };
    vec![
        (
            "sort_strings_to_table",
            format!("CREATE OR REPLACE TABLE sorted AS {sorted_strings}"),
            copy(sorted_strings),
        ),
        ("window_by_string", window("o_comment"), window("o_comment")),
        (
            "window_by_integer",
            window("o_orderkey"),
            window("o_orderkey"),
        ),
        (
            "top_strings",
            "SELECT o_comment FROM orders ORDER BY o_comment DESC LIMIT 10".into(),
            "SELECT o_comment FROM orders ORDER BY o_comment DESC LIMIT 10".into(),
        ),
    ]
}

async fn sorts(
    sf: f64,
    dir: &Path,
    iterations: usize,
    csv_out: Option<PathBuf>,
    cluster: Option<String>,
    token: Option<String>,
) -> datafusion::error::Result<()> {
    let partitions = cores();
    let kiln = open_lake(dir, sf, partitions, cluster, token).await?;
    let plain = plain_datafusion(
        &kiln,
        SessionConfig::new().with_target_partitions(partitions),
    )
    .await?;
    let scratch = std::env::temp_dir().join(format!("kiln-sorts-{}", std::process::id()));
    println!("sorts over TPC-H SF{sf} orders, {partitions} partitions, best of {iterations}");
    println!(
        "{:>22} {:>10} {:>12} {:>12} {:>14} {:>7}",
        "workload", "kiln_ms", "kiln_peak_mib", "df_ms", "df_peak_mib", "ratio"
    );
    let mut lines =
        vec!["workload,kiln_ms,kiln_peak_mib,datafusion_ms,datafusion_peak_mib,ratio".to_string()];
    for (name, kiln_sql, df_sql) in sort_workloads(&scratch) {
        let (kiln_time, kiln_peak) = best_with_peak_rss(iterations, || async {
            kiln.execute(&kiln_sql).await.map(|r| r.row_count())
        })
        .await?;
        let (df_time, df_peak) = best_with_peak_rss(iterations, || async {
            let _ = std::fs::remove_dir_all(&scratch);
            datafusion_rows(&plain, &df_sql).await
        })
        .await?;
        let ratio = kiln_time.as_secs_f64() / df_time.as_secs_f64();
        println!(
            "{name:>22} {:>10.1} {kiln_peak:>12.0} {:>12.1} {df_peak:>14.0} {ratio:>7.2}",
            ms(kiln_time),
            ms(df_time)
        );
        lines.push(format!(
            "{name},{:.1},{kiln_peak:.0},{:.1},{df_peak:.0},{ratio:.3}",
            ms(kiln_time),
            ms(df_time)
        ));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    kiln.execute("DROP TABLE IF EXISTS sorted").await?;
    if let Some(path) = csv_out {
        std::fs::write(&path, lines.join("\n") + "\n")?;
    }
    Ok(())
}

fn data_dir(dir: &Path, sf: f64) -> PathBuf {
    dir.join(format!("sf{sf}"))
}

fn generate(dir: &Path, sf: f64) -> PathBuf {
    let csv = data_dir(dir, sf).join("csv");
    if !csv.join("lineitem").exists() {
        let start = Instant::now();
        let parts = cores() * 2;
        kiln_tpch::generate_csv(&csv, sf, parts).expect("generate TPC-H CSV");
        eprintln!("generated SF{sf} CSV in {:.1?}", start.elapsed());
    }
    csv
}

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    match Cli::parse().command {
        Command::Gen { sf, dir } => {
            let csv = generate(&dir, sf);
            println!("{}", csv.display());
            Ok(())
        }
        Command::Latency {
            dir,
            iterations,
            cluster,
            token,
        } => latency(&dir, iterations, cluster, token).await,
        Command::Sorts {
            sf,
            dir,
            iterations,
            csv,
            cluster,
            token,
        } => sorts(sf, &dir, iterations, csv, cluster, token).await,
        Command::Run {
            sf,
            dir,
            iterations,
            queries,
            partitions,
            csv: csv_out,
            kiln_set,
            cluster,
            token,
            answers,
        } => {
            let partitions = partitions.unwrap_or_else(cores);
            if let Some(dir) = &answers {
                std::fs::create_dir_all(dir)?;
            }
            let kiln = open_lake(&dir, sf, partitions, cluster, token).await?;
            for setting in &kiln_set {
                let (key, value) = setting.split_once('=').unwrap_or((setting, ""));
                kiln.execute(&format!("SET {key} = {value}")).await?;
            }
            let plain = plain_datafusion(
                &kiln,
                SessionConfig::new().with_target_partitions(partitions),
            )
            .await?;
            // The same engine with the options Kiln's session plans with.
            let plain_kiln_config = plain_datafusion(&kiln, kiln.context().copied_config()).await?;
            let queries = if queries.is_empty() {
                (1..=22).collect()
            } else {
                queries
            };

            println!("TPC-H SF{sf}, {partitions} partitions, best of {iterations}");
            println!(
                "{:>5} {:>12} {:>14} {:>16} {:>7} {:>6}",
                "query", "kiln_ms", "datafusion_ms", "df_kiln_conf_ms", "ratio", "rows"
            );
            let mut lines = vec![
                "query,kiln_ms,datafusion_ms,datafusion_kiln_config_ms,ratio,kiln_rows,datafusion_rows"
                    .to_string(),
            ];
            let (mut total_kiln, mut total_df, mut total_df_kiln) =
                (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            for n in queries {
                let sql = kiln_tpch::query(n, sf).expect("query 1..=22");
                let (kiln_time, kiln_rows) = best_of(iterations, || async {
                    kiln.execute(&sql).await.map(|r| r.row_count())
                })
                .await?;
                let (df_time, df_rows) =
                    best_of(iterations, || async { datafusion_rows(&plain, &sql).await }).await?;
                let (df_kiln_time, _) = best_of(iterations, || async {
                    datafusion_rows(&plain_kiln_config, &sql).await
                })
                .await?;
                if let Some(dir) = &answers {
                    let answer = kiln.execute(&sql).await?;
                    write_csv(&dir.join(format!("q{n}.csv")), &answer.batches)?;
                }
                total_kiln += kiln_time;
                total_df += df_time;
                total_df_kiln += df_kiln_time;
                let ratio = kiln_time.as_secs_f64() / df_time.as_secs_f64();
                let flag = if kiln_rows == df_rows {
                    ""
                } else {
                    "  ROW COUNT MISMATCH"
                };
                println!(
                    "{:>5} {:>12.1} {:>14.1} {:>16.1} {:>7.2} {:>6}{flag}",
                    format!("q{n}"),
                    ms(kiln_time),
                    ms(df_time),
                    ms(df_kiln_time),
                    ratio,
                    kiln_rows
                );
                lines.push(format!(
                    "q{n},{:.1},{:.1},{:.1},{ratio:.3},{kiln_rows},{df_rows}",
                    ms(kiln_time),
                    ms(df_time),
                    ms(df_kiln_time)
                ));
            }
            let ratio = total_kiln.as_secs_f64() / total_df.as_secs_f64();
            println!(
                "{:>5} {:>12.1} {:>14.1} {:>16.1} {:>7.2}",
                "total",
                ms(total_kiln),
                ms(total_df),
                ms(total_df_kiln),
                ratio
            );
            lines.push(format!(
                "total,{:.1},{:.1},{:.1},{ratio:.3},,",
                ms(total_kiln),
                ms(total_df),
                ms(total_df_kiln)
            ));
            if let Some(path) = csv_out {
                std::fs::write(&path, lines.join("\n") + "\n")?;
            }
            Ok(())
        }
    }
}

fn write_csv(path: &Path, batches: &[RecordBatch]) -> datafusion::error::Result<()> {
    let mut writer = datafusion::arrow::csv::Writer::new(std::fs::File::create(path)?);
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(())
}

/// `--iterations`: a count of at least one (a best or a median of no runs
/// is not a number).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

async fn latency(
    dir: &Path,
    iterations: usize,
    cluster: Option<String>,
    token: Option<String>,
) -> datafusion::error::Result<()> {
    let mut options = SessionOptions::new(dir.join("latency-lake"));
    options.cluster = cluster;
    options.token = token;
    let kiln = kiln_cluster::open(options).await?;
    let plain = SessionContext::new();
    let sql = "SELECT 1";
    let mut kiln_times = Vec::with_capacity(iterations);
    let mut plain_times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        kiln.execute(sql).await?;
        kiln_times.push(start.elapsed());
        let start = Instant::now();
        datafusion_rows(&plain, sql).await?;
        plain_times.push(start.elapsed());
    }
    let summary = |times: &mut Vec<Duration>| {
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
        (ms(times[times.len() / 2]), ms(mean))
    };
    let (kiln_median, kiln_mean) = summary(&mut kiln_times);
    let (plain_median, plain_mean) = summary(&mut plain_times);
    println!("engine,median_ms,mean_ms");
    println!("kiln,{kiln_median:.2},{kiln_mean:.2}");
    println!("datafusion,{plain_median:.2},{plain_mean:.2}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A Kiln session on the SF `sf` lake under `dir`, with the TPC-H tables
/// generated and ingested if they are not there yet.
async fn open_lake(
    dir: &Path,
    sf: f64,
    partitions: usize,
    cluster: Option<String>,
    token: Option<String>,
) -> datafusion::error::Result<KilnSession> {
    let csv = generate(dir, sf);
    let mut options = SessionOptions::new(data_dir(dir, sf).join("lake"));
    options.target_partitions = Some(partitions);
    options.cluster = cluster;
    options.token = token;
    options.allowed_paths = vec![csv.clone()];
    let kiln = kiln_cluster::open(options).await?;
    ingest(&kiln, &csv).await?;
    Ok(kiln)
}

/// Runs `sql` on a plain DataFusion context; returns its row count.
async fn datafusion_rows(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<usize> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

/// [`best_of`], plus how far the process's peak RSS rose above its RSS at
/// the start, in MiB.
async fn best_with_peak_rss<F, Fut>(
    iterations: usize,
    run: F,
) -> datafusion::error::Result<(Duration, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = datafusion::error::Result<usize>>,
{
    let base = current_rss_mib();
    reset_peak_rss();
    let (best, _) = best_of(iterations, run).await?;
    Ok((best, peak_rss_mib() - base))
}

async fn best_of<F, Fut>(
    iterations: usize,
    mut run: F,
) -> datafusion::error::Result<(Duration, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = datafusion::error::Result<usize>>,
{
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        rows = run().await?;
        best = best.min(start.elapsed());
    }
    Ok((best, rows))
}

/// Loads each table's CSV into the lake once (Kiln `CREATE TABLE AS`).
async fn ingest(kiln: &KilnSession, csv: &Path) -> datafusion::error::Result<()> {
    let existing = kiln
        .lake()
        .catalog()
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    for (table, _) in kiln_tpch::TABLES {
        if existing.tables.contains_key(table) {
            continue;
        }
        let start = Instant::now();
        let external = format!("{table}_csv");
        kiln.execute(&format!("DROP TABLE IF EXISTS {external}"))
            .await?;
        kiln.execute(&kiln_tpch::csv_table_ddl(table, &external, csv).unwrap())
            .await?;
        kiln.execute(&format!("CREATE TABLE {table} AS SELECT * FROM {external}"))
            .await?;
        eprintln!("ingested {table} in {:.1?}", start.elapsed());
    }
    Ok(())
}

/// A plain DataFusion context with `config` over the lake's current Parquet snapshots.
async fn plain_datafusion(
    kiln: &KilnSession,
    config: SessionConfig,
) -> datafusion::error::Result<SessionContext> {
    let ctx = SessionContext::new_with_config(config);
    let catalog = kiln
        .lake()
        .catalog()
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    for (table, _) in kiln_tpch::TABLES {
        let Some(TableEntry::Managed(managed)) = catalog.tables.get(table) else {
            continue;
        };
        let dir = kiln.lake().snapshot_dir(table, managed.snapshot);
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        ctx.register_listing_table(table, format!("{}/", dir.display()), options, None, None)
            .await?;
    }
    Ok(ctx)
}
