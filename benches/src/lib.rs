//! Helpers shared by Kiln's benchmark binaries: this process's memory as
//! Linux reports it in `/proc/self/status`.
//!
//! ```
//! kiln_benches::reset_peak_rss();
//! assert!(kiln_benches::peak_rss_mib() >= kiln_benches::current_rss_mib() * 0.5);
//! ```

/// A `/proc/self/status` field given in kB (`VmHWM`, `VmRSS`), in MiB;
/// NaN where the field cannot be read.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Peak resident memory since the process started or the last
/// [`reset_peak_rss`], in MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM")
}

/// Resident memory now, in MiB.
pub fn current_rss_mib() -> f64 {
    status_mib("VmRSS")
}

/// Resets the peak-RSS mark to the current RSS (Linux `clear_refs` 5).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
