//! The SQL conformance suite (`sql/slt`) on the embedded Ballista cluster.

use crate::common::session;
use crate::slt::{run_suite, slt_files, Guard};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_conformance_suite() {
    let failures = run_suite(
        |_| true,
        |lake, _scratch| async move { (session(&lake, 2).await, Box::new(()) as Guard) },
    )
    .await;
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n\n{}",
        failures.len(),
        slt_files().len(),
        failures.join("\n\n")
    );
}
