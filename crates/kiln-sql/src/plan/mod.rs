//! Kiln's plan nodes: the training round as a logical node ([`logical`]),
//! its physical operator that feeds each partition to the ML driver's
//! [`kiln_ml::PartitionRound`] ([`physical`]), the one-stage wrapper of the
//! embedded cluster ([`local_stage`]), the client's planner that submits
//! each statement's physical plan to the scheduler ([`submit`]), what that
//! plan needs when each partition of a stage is its own task
//! ([`task_safety`]), the runtime limits its tasks run under
//! ([`task_runtime`]), the training rows kept between rounds
//! ([`row_cache`]), window operators whose flags the codec carries
//! ([`window_flags`]), and the codecs that ship them between client,
//! scheduler and executors ([`codec`]).
//!
//! Imports only from `functions` and `catalog` below it.

pub mod codec;
pub mod local_stage;
pub mod logical;
pub mod physical;
pub mod row_cache;
pub mod submit;
pub mod task_runtime;
pub mod task_safety;
pub mod window_flags;
