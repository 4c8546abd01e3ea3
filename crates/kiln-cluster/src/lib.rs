//! Kiln's cluster: the Ballista scheduler and executors (`kiln scheduler`,
//! `kiln executor`), the embedded in-process cluster every session uses by
//! default, the token and TLS layers on both ports, Flight SQL and the
//! `/health` endpoints ([`server`], [`embedded`]), and [`open`], which gives
//! a [`KilnSession`] its cluster: an embedded one, or a remote scheduler it
//! checks first.
//!
//! Depends on `kiln-sql` (sessions, the state every role builds, codecs);
//! `kiln-sql` never depends on this crate or on Ballista's scheduler and
//! executor. The CLI depends on both.
//!
//! ```
//! // Addresses as users write them become the scheduler's gRPC URL.
//! assert_eq!(kiln_cluster::server::scheduler_url("df://10.0.0.5:50050").unwrap(), "http://10.0.0.5:50050");
//! assert!(kiln_cluster::server::scheduler_url("s3://bucket").is_err());
//! ```

pub mod embedded;
mod handoff;
pub mod server;

use std::collections::HashMap;

use ballista_core::extension::SessionConfigExt;
use datafusion::error::Result;
use kiln_sql::{
    kiln_session_config, one_stage_session_config, Cluster, KilnSession, SessionOptions,
};

pub use server::{parse_byte_size, TOKEN_ENV, TOKEN_HEADER};

/// Opens a session on `options.cluster`'s scheduler (after checking that it
/// answers and accepts the token), or on a new embedded cluster when none is given.
pub async fn open(options: SessionOptions) -> Result<KilnSession> {
    let mut config = kiln_session_config(options.target_partitions);
    if let Some(token) = &options.token {
        config = config.with_ballista_grpc_metadata(HashMap::from([(
            TOKEN_HEADER.to_string(),
            token.clone(),
        )]));
    }
    let cluster: Box<dyn Cluster> = match &options.cluster {
        Some(address) => {
            if let Some(ca) = &options.tls_ca {
                config = server::client_tls(config, ca)?;
            }
            let url =
                server::with_scheme(&server::scheduler_url(address)?, options.tls_ca.is_some());
            server::probe_scheduler(&url, options.token.as_deref(), options.tls_ca.as_deref())
                .await?;
            Box::new(RemoteCluster { url })
        }
        None => {
            let lake = kiln_sql::catalog::lake::Lake::open(&options.lake)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let vcores = config.target_partitions();
            config = one_stage_session_config(config);
            Box::new(embedded::start(lake.root(), options.target_partitions, vcores).await?)
        }
    };
    KilnSession::connect(&options, config, cluster).await
}

/// A scheduler elsewhere, checked by [`open`].
struct RemoteCluster {
    url: String,
}

impl Cluster for RemoteCluster {
    fn scheduler_url(&self) -> &str {
        &self.url
    }

    fn is_embedded(&self) -> bool {
        false
    }
}

impl Cluster for embedded::EmbeddedCluster {
    fn scheduler_url(&self) -> &str {
        &self.scheduler_url
    }

    fn is_embedded(&self) -> bool {
        true
    }
}
