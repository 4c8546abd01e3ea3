//! The `kiln` command: this library holds its argument definitions
//! ([`args::Cli`], clap), shared by the binary and by the tests that check
//! the command lines in `deploy/`; the binary (`main.rs`, `repl.rs`,
//! `jobs.rs`, `serve.rs`, `output.rs`) wires them to `kiln-sql` sessions,
//! `kiln-cluster` processes and `kiln-jobs` runs. The only crate that depends
//! on all of them.
//!
//! ```
//! use clap::Parser;
//! let cli = kiln_cli::args::Cli::try_parse_from(["kiln", "--lake", "/srv/lake", "sql", "-c", "SELECT 1"]).unwrap();
//! assert_eq!(cli.global.lake, std::path::PathBuf::from("/srv/lake"));
//! assert!(kiln_cli::args::Cli::try_parse_from(["kiln", "no-such-command"]).is_err());
//! ```

pub mod args;
