//! Turning raw errors into ones that say what is wrong and how to fix it:
//! syntax errors with their position, unknown tables with the known ones,
//! malformed CSV/JSON rows with their file and line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::utils::datafusion_strsim::levenshtein;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::DataFusionError;

use crate::session::KilnSession;

/// `; known tables: a, b (did you mean 'x'?)` for an unknown table `name`.
pub fn known_tables_hint(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        return "; the lake has no tables yet (CREATE TABLE ... AS or CREATE EXTERNAL TABLE)"
            .to_string();
    }
    let suggestion = known
        .iter()
        .map(|k| (levenshtein(&k.to_lowercase(), &name.to_lowercase()), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean '{k}'?)"))
        .unwrap_or_default();
    format!("; known tables: {}{suggestion}", known.join(", "))
}

/// Adds what the user needs to fix `err`: known tables for an unknown table,
/// file and line for a malformed CSV/JSON row in any of `tables`.
pub async fn explain(
    err: DataFusionError,
    session: &KilnSession,
    tables: &[String],
) -> DataFusionError {
    let message = err.to_string();
    if let Some(name) = unknown_table(&message) {
        if !message.contains("known tables") {
            let hint = known_tables_hint(&name, &session.table_names());
            return DataFusionError::Plan(format!("table '{name}' not found{hint}"));
        }
    }
    if message.contains("failed to serialize") {
        let node = message
            .split("plan node, name: [")
            .nth(1)
            .and_then(|rest| rest.split(']').next());
        let what = match node {
            Some("StreamingTableExec") => "an unbounded (streaming) table".to_string(),
            Some(node) => format!("the plan node {node}"),
            None => "a source".to_string(),
        };
        return DataFusionError::NotImplemented(format!(
            "not supported yet on Ballista: this statement reads {what}, which cannot be sent \
             to executors yet; use a lake table instead ({message})"
        ));
    }
    if looks_like_malformed_row(&message) {
        for table in tables {
            if let Some(located) = locate_malformed_row(session, table).await {
                return DataFusionError::Execution(format!(
                    "malformed row in table '{table}': {located}"
                ));
            }
        }
    }
    if let Some(error) = job_error(&message) {
        return error;
    }
    if lost_connection(&message) {
        return DataFusionError::Execution(format!(
            "lost the connection to the Kiln scheduler while the statement ran; nothing was \
             published, re-run the statement once the scheduler is back ({})",
            message.trim()
        ));
    }
    match grpc_status(&message) {
        Some(simple) => DataFusionError::Execution(simple),
        None => err,
    }
}

fn lost_connection(message: &str) -> bool {
    [
        "BrokenPipe",
        "Connection refused",
        "ConnectionReset",
        "connection reset",
        "error reading a body from connection",
        "tcp connect error",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Ballista passes the scheduler's gRPC refusals on in their Debug form,
/// `Status { code: Unauthenticated, message: "...", metadata: ... }`: returns
/// the code and message in words.
fn grpc_status(message: &str) -> Option<String> {
    let status = &message[message.find("Status { code: ")? + "Status { code: ".len()..];
    let code = status.split(',').next()?.trim();
    let text = status.split("message: \"").nth(1)?;
    let text = text[..text.find("\", ")?].replace("\\\"", "\"");
    let hint = match code {
        "Unavailable" => " (is the scheduler running and reachable?)",
        _ => "",
    };
    Some(format!("the Kiln scheduler answered {code}: {text}{hint}"))
}

/// Ballista reports a failed task as `Job J failed: ... runtime execution error:
/// DataFusionError(Shared(External(ArrowError(DivideByZero))))`: the Debug form
/// of the task's error inside job and stage envelopes. Rebuilds that error,
/// so the statement fails with the kind and text DataFusion gives (the job
/// goes to the log); where the form is not one it knows, the cause in words.
fn job_error(message: &str) -> Option<DataFusionError> {
    let job = message
        .split("Job ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    let marker = "runtime execution error: ";
    let cause = message[message.find(marker)? + marker.len()..].trim();
    log::info!("job {job} failed on an executor: {cause}");
    let rebuilt = DebugValue::parse(cause)
        .filter(|(_, rest)| rest.trim().is_empty())
        .and_then(|(value, _)| value.datafusion_error());
    Some(rebuilt.unwrap_or_else(|| {
        DataFusionError::Execution(format!("query failed on an executor (job {job}): {cause}"))
    }))
}

/// A value in Rust's Debug notation: `Name(args, ...)`, `"text"` or `Name`.
#[derive(Debug, PartialEq)]
enum DebugValue {
    Call(String, Vec<DebugValue>),
    Text(String),
    Word(String),
}

impl DebugValue {
    /// Parses one value from the start of `s`; returns it and the rest.
    fn parse(s: &str) -> Option<(DebugValue, &str)> {
        let s = s.trim_start();
        if let Some(quoted) = s.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return Some((DebugValue::Text(text), &quoted[i + 1..])),
                    '\\' => match chars.next()?.1 {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'r' => text.push('\r'),
                        '0' => text.push('\0'),
                        'u' => {
                            chars.next()?; // '{'
                            let mut hex = String::new();
                            loop {
                                match chars.next()?.1 {
                                    '}' => break,
                                    h => hex.push(h),
                                }
                            }
                            text.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        escaped => text.push(escaped),
                    },
                    c => text.push(c),
                }
            }
            return None;
        }
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        let (name, rest) = s.split_at(end);
        let Some(mut rest) = rest.strip_prefix('(') else {
            return Some((DebugValue::Word(name.to_string()), rest));
        };
        let mut args = Vec::new();
        loop {
            let (arg, after) = DebugValue::parse(rest)?;
            args.push(arg);
            let after = after.trim_start();
            if let Some(after) = after.strip_prefix(',') {
                rest = after;
            } else {
                return Some((
                    DebugValue::Call(name.to_string(), args),
                    after.strip_prefix(')')?,
                ));
            }
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            DebugValue::Text(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// The DataFusion error this value is the Debug form of.
    fn datafusion_error(&self) -> Option<DataFusionError> {
        let DebugValue::Call(name, args) = self else {
            return None;
        };
        let text = || args.first()?.text();
        Some(match (name.as_str(), args.as_slice()) {
            // Envelopes Ballista and DataFusion's exchanges add around the cause.
            ("DataFusionError" | "Shared" | "External", [inner]) => {
                return inner.datafusion_error().or_else(|| {
                    inner
                        .arrow_error()
                        .map(|e| DataFusionError::ArrowError(Box::new(e), None))
                })
            }
            ("ArrowError", [inner, ..]) => {
                DataFusionError::ArrowError(Box::new(inner.arrow_error()?), None)
            }
            ("Context", [context, inner]) => inner.datafusion_error()?.context(context.text()?),
            ("Plan", _) => DataFusionError::Plan(text()?),
            ("Execution", _) => DataFusionError::Execution(text()?),
            ("NotImplemented", _) => DataFusionError::NotImplemented(text()?),
            ("Internal", _) => DataFusionError::Internal(text()?),
            ("Configuration", _) => DataFusionError::Configuration(text()?),
            ("ResourcesExhausted", _) => DataFusionError::ResourcesExhausted(text()?),
            _ => return None,
        })
    }

    /// The Arrow error this value is the Debug form of.
    fn arrow_error(&self) -> Option<ArrowError> {
        Some(match self {
            DebugValue::Word(word) => match word.as_str() {
                "DivideByZero" => ArrowError::DivideByZero,
                "DictionaryKeyOverflowError" => ArrowError::DictionaryKeyOverflowError,
                "RunEndIndexOverflowError" => ArrowError::RunEndIndexOverflowError,
                _ => return None,
            },
            DebugValue::Call(name, args) => {
                let text = args.first()?.text()?;
                match name.as_str() {
                    "ParseError" => ArrowError::ParseError(text),
                    "CastError" => ArrowError::CastError(text),
                    "ComputeError" => ArrowError::ComputeError(text),
                    "ArithmeticOverflow" => ArrowError::ArithmeticOverflow(text),
                    "InvalidArgumentError" => ArrowError::InvalidArgumentError(text),
                    "SchemaError" => ArrowError::SchemaError(text),
                    "NotYetImplemented" => ArrowError::NotYetImplemented(text),
                    "CsvError" => ArrowError::CsvError(text),
                    "JsonError" => ArrowError::JsonError(text),
                    "MemoryError" => ArrowError::MemoryError(text),
                    "IpcError" => ArrowError::IpcError(text),
                    "ParquetError" => ArrowError::ParquetError(text),
                    _ => return None,
                }
            }
            DebugValue::Text(_) => return None,
        })
    }
}

fn unknown_table(message: &str) -> Option<String> {
    let start = message.find("table '")? + "table '".len();
    let rest = &message[start..];
    let end = rest.find("' not found")?;
    let qualified = &rest[..end];
    Some(
        qualified
            .rsplit('.')
            .next()
            .unwrap_or(qualified)
            .to_string(),
    )
}

fn looks_like_malformed_row(message: &str) -> bool {
    [
        "Csv error",
        "Json error",
        "JsonError",
        "CsvError",
        "Error while parsing value",
        "Parser error",
        "incorrect number of fields",
        "unequal lengths",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Re-reads a CSV/JSON table's files one by one, in order, to name the first
/// file and line that fail to parse with the table's schema.
async fn locate_malformed_row(session: &KilnSession, table: &str) -> Option<String> {
    let provider = session.context().table_provider(table).await.ok()?;
    let listing = provider.downcast_ref::<ListingTable>()?;
    let options = listing.options();
    let partition_cols: Vec<&String> = options
        .table_partition_cols
        .iter()
        .map(|(n, _)| n)
        .collect();
    let file_schema = Arc::new(Schema::new(
        provider
            .schema()
            .fields()
            .iter()
            .filter(|f| !partition_cols.contains(&f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let files: Vec<PathBuf> = listing
        .table_paths()
        .iter()
        .flat_map(|url| {
            list_files(
                Path::new(url.prefix().as_ref() as &str),
                &options.file_extension,
            )
        })
        .collect();
    let format = options.format.as_ref();
    for file in files {
        let problem = if let Some(csv) = format.downcast_ref::<CsvFormat>() {
            check_csv(&file, &file_schema, csv)
        } else if format.downcast_ref::<JsonFormat>().is_some() {
            check_json(&file, &file_schema)
        } else {
            None
        };
        if let Some(problem) = problem {
            return Some(format!("file '{}', {problem}", file.display()));
        }
    }
    None
}

fn list_files(prefix: &Path, extension: &str) -> Vec<PathBuf> {
    let root = if prefix.is_absolute() {
        prefix.to_path_buf()
    } else {
        Path::new("/").join(prefix)
    };
    if root.is_file() {
        return vec![root];
    }
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(extension) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn check_csv(file: &Path, schema: &SchemaRef, format: &CsvFormat) -> Option<String> {
    use datafusion::arrow::csv::ReaderBuilder;
    let options = format.options();
    let has_header = options.has_header.unwrap_or(true);
    let reader = ReaderBuilder::new(Arc::clone(schema))
        .with_header(has_header)
        .with_delimiter(options.delimiter)
        .with_quote(options.quote)
        .with_batch_size(4096)
        .build(File::open(file).ok()?)
        .ok()?;
    for batch in reader {
        if let Err(e) = batch {
            let message = e.to_string();
            return Some(match csv_line(&message) {
                Some(record) => {
                    let line = record + usize::from(has_header);
                    format!("line {line}: {}", strip_line_suffix(&message))
                }
                None => message,
            });
        }
    }
    None
}

/// The 1-based record number arrow reports in "... at line N ...".
fn csv_line(message: &str) -> Option<usize> {
    let start = message.find("at line ")? + "at line ".len();
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn strip_line_suffix(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => {
            let rest = &message[i + " at line ".len()..];
            let tail: String = rest.chars().skip_while(char::is_ascii_digit).collect();
            format!("{}{}", &message[..i], tail)
        }
        None => message.to_string(),
    }
}

fn check_json(file: &Path, schema: &SchemaRef) -> Option<String> {
    use datafusion::arrow::json::ReaderBuilder;
    let reader = BufReader::new(File::open(file).ok()?);
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .build_decoder()
        .ok()?;
    for (index, line) in reader.lines().enumerate() {
        let line = line.ok()?;
        if line.trim().is_empty() {
            continue;
        }
        let outcome = decoder
            .decode(line.as_bytes())
            .and_then(|_| decoder.decode(b"\n"))
            .and_then(|_| decoder.flush());
        if let Err(e) = outcome {
            return Some(format!("line {}: {e}", index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_table_name_is_extracted() {
        assert_eq!(
            unknown_table("Error during planning: table 'datafusion.public.ordrs' not found"),
            Some("ordrs".to_string())
        );
        assert_eq!(unknown_table("something else"), None);
    }

    #[test]
    fn grpc_refusals_are_unwrapped() {
        let raw = r#"Execution error: Status { code: Unauthenticated, message: "the Kiln token presented is wrong; check --token / KILN_TOKEN", metadata: MetadataMap { headers: {} }, source: None }"#;
        assert_eq!(
            grpc_status(raw).unwrap(),
            "the Kiln scheduler answered Unauthenticated: the Kiln token presented is wrong; check --token / KILN_TOKEN"
        );
        assert!(grpc_status("Execution error: plain").is_none());
    }

    #[test]
    fn ballista_job_errors_become_the_task_error() {
        let raw = "Execution error: Job 038H4 failed: Job failed due to stage 0 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(ArrowError(DivideByZero))))";
        assert_eq!(
            job_error(raw).unwrap().to_string(),
            "Arrow error: Divide by zero error"
        );
        let raw = r#"Job X1 failed: runtime execution error: DataFusionError(ArrowError(CastError("Cannot cast \"x\"\n"), None))"#;
        assert_eq!(
            job_error(raw).unwrap().to_string(),
            "Arrow error: Cast error: Cannot cast \"x\"\n"
        );
        let raw = r#"Job X2 failed: runtime execution error: DataFusionError(Plan("Percentile value must be a literal"))"#;
        assert!(
            matches!(job_error(raw).unwrap(), DataFusionError::Plan(m) if m == "Percentile value must be a literal")
        );
        let raw = "Job X3 failed: runtime execution error: Something { odd: 1 }";
        assert_eq!(
            job_error(raw).unwrap().to_string(),
            "Execution error: query failed on an executor (job X3): Something { odd: 1 }"
        );
        assert!(job_error("plain error").is_none());
    }

    #[test]
    fn hint_lists_known_tables_and_suggests_the_nearest() {
        let known = vec!["customers".to_string(), "orders".to_string()];
        let hint = known_tables_hint("ordrs", &known);
        assert!(hint.contains("known tables: customers, orders"), "{hint}");
        assert!(hint.contains("did you mean 'orders'"), "{hint}");
        assert!(!known_tables_hint("zzzzzzzz", &known).contains("did you mean"));
    }

    #[test]
    fn csv_errors_name_the_physical_line() {
        use datafusion::arrow::datatypes::{DataType, Field};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.csv");
        std::fs::write(&file, "a,b\n1,x\n2,y\nthree,z\n4,w\n").unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let problem =
            check_csv(&file, &schema, &CsvFormat::default().with_has_header(true)).unwrap();
        assert!(problem.starts_with("line 4:"), "{problem}");
        assert!(problem.contains("three"), "{problem}");
    }

    #[test]
    fn json_errors_name_the_line() {
        use datafusion::arrow::datatypes::{DataType, Field};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.json");
        std::fs::write(&file, "{\"a\": 1}\n{\"a\": 2}\n{\"a\": \"x\"}\n").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let problem = check_json(&file, &schema).unwrap();
        assert!(problem.starts_with("line 3:"), "{problem}");
    }
}
