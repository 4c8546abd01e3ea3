//! The interactive `kiln sql` prompt: line editing, history, multi-line statements.

use std::process::ExitCode;

use kiln_sql::KilnSession;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::output::Printer;
use crate::strip_kind;

const HELP: &str = "Statements end with ';' and may span lines.\n\
  \\q, quit, exit   leave\n\
  \\d               SHOW TABLES\n\
  \\d NAME          DESCRIBE NAME\n\
  \\?               this help";

pub async fn run(session: &KilnSession, printer: &Printer) -> ExitCode {
    let mut editor = match DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".kiln_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    eprintln!(
        "Kiln {} — lake {}. Type \\? for help.",
        env!("CARGO_PKG_VERSION"),
        session.lake().root().display()
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "kiln> "
        } else {
            "   -> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() {
                    let command = match trimmed {
                        "\\q" | "quit" | "exit" | "quit;" | "exit;" => break,
                        "\\?" | "help" => {
                            eprintln!("{HELP}");
                            continue;
                        }
                        "\\d" => Some("SHOW TABLES;".to_string()),
                        d if d.starts_with("\\d ") => Some(format!("DESCRIBE {};", d[3..].trim())),
                        "" => continue,
                        _ => None,
                    };
                    if let Some(sql) = command {
                        let _ = editor.add_history_entry(trimmed);
                        execute(session, printer, &sql).await;
                        continue;
                    }
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    let _ = editor.add_history_entry(buffer.trim());
                    execute(session, printer, &buffer).await;
                    buffer.clear();
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}

async fn execute(session: &KilnSession, printer: &Printer, sql: &str) {
    if let Err(e) = session
        .execute_script(sql, |_, r| {
            printer.print(&r);
            for warning in session.take_warnings() {
                printer.warn(&warning);
            }
        })
        .await
    {
        eprintln!("error: {}", strip_kind(&e.error));
    }
}
