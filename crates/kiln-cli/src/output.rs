//! Printing statement results as a table, CSV or JSON lines.

use std::io::Write;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use kiln_cli::args::OutputFormat;
use kiln_sql::StatementResult;

pub struct Printer {
    format: OutputFormat,
    quiet: bool,
}

impl Printer {
    pub fn new(format: OutputFormat, quiet: bool) -> Self {
        Self { format, quiet }
    }

    /// Query rows go to stdout; status lines to stderr (so piping CSV/JSON stays clean).
    pub fn print(&self, result: &StatementResult) {
        if let Some(message) = &result.message {
            if !self.quiet {
                eprintln!("{message}");
            }
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let written = match self.format {
            OutputFormat::Table => self.table(result, &mut stdout),
            OutputFormat::Csv => {
                let mut writer = WriterBuilder::new().with_header(true).build(&mut stdout);
                result
                    .batches
                    .iter()
                    .try_for_each(|b| writer.write(b))
                    .map_err(|e| e.to_string())
            }
            OutputFormat::Json => {
                let mut writer = LineDelimitedWriter::new(&mut stdout);
                result
                    .batches
                    .iter()
                    .try_for_each(|b| writer.write(b))
                    .and_then(|_| writer.finish())
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = written {
            eprintln!("error: cannot print the result: {e}");
        }
        let _ = stdout.flush();
    }

    fn table(&self, result: &StatementResult, out: &mut impl Write) -> Result<(), String> {
        let rows = result.row_count();
        if result.schema.fields().is_empty() {
            return Ok(());
        }
        let text = if result.batches.is_empty() {
            let empty = datafusion::arrow::array::RecordBatch::new_empty(result.schema.clone());
            pretty_format_batches(&[empty])
        } else {
            pretty_format_batches(&result.batches)
        }
        .map_err(|e| e.to_string())?;
        writeln!(out, "{text}").map_err(|e| e.to_string())?;
        if !self.quiet {
            eprintln!("{rows} row{}", if rows == 1 { "" } else { "s" });
        }
        Ok(())
    }

    pub fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}
