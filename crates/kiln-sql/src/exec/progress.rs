//! Training progress on stderr: a progress bar while stderr is a terminal,
//! one plain line per epoch or iteration otherwise (job logs keep them),
//! nothing when the session's progress output is off.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_ml::EpochRecord;

pub(crate) struct TrainingProgress {
    enabled: bool,
    name: String,
    step: &'static str,
    total: usize,
    bar: Option<ProgressBar>,
}

impl TrainingProgress {
    /// `step` names what a record counts ("epoch", "iteration"); `total` is the most there can be.
    pub fn new(enabled: bool, name: &str, step: &'static str, total: usize) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "model {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar.set_message(format!("{step}s"));
            bar
        });
        Self {
            enabled,
            name: name.to_string(),
            step,
            total,
            bar,
        }
    }

    /// A record that became final.
    pub fn record(&self, record: &EpochRecord) {
        let mut numbers = format!("loss {:.6}", record.train_loss);
        if let Some(v) = &record.validation {
            for (k, value) in v.values.iter().take(2) {
                numbers.push_str(&format!(" validation_{k} {value:.6}"));
            }
        }
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{}s, {numbers}", self.step));
                bar.set_position(record.epoch as u64);
            }
            None => self.line(format!(
                "model {}: {} {}/{} {numbers}",
                self.name, self.step, record.epoch, self.total
            )),
        }
    }

    /// A line beside the bar (or on its own).
    pub fn line(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.enabled => eprintln!("{line}"),
            None => {}
        }
    }
}

impl Drop for TrainingProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
