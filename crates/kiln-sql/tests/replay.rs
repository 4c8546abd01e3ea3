//! DataFusion's own sqllogictest files replayed through Kiln's embedded
//! cluster and through plain DataFusion (`tests/support/datafusion_replay.rs`).

use crate::common::session;
use crate::datafusion_replay::{only_requested, replay_suite, Source, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn datafusion_sqllogictest_files_give_datafusion_answers_on_the_embedded_cluster() {
    let Some(source) = Source::locate() else {
        let fetch = "run tests/datafusion-slt/fetch.sh (CI does) to fetch DataFusion's .slt files";
        assert!(std::env::var_os("CI").is_none(), "{fetch}");
        eprintln!("skipped: {fetch}");
        return;
    };
    let files = only_requested(source.files());
    let outcome = replay_suite(&source, &files, "embedded", 3, |dir| async move {
        Target::Kiln {
            session: session(&dir.join("lake"), 4).await,
            _guard: Box::new(()),
        }
    })
    .await;
    if let Err(failures) = outcome {
        panic!("{failures}");
    }
}
