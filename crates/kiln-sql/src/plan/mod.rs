//! Kiln's plan nodes: the training round as a logical node ([`logical`]),
//! its physical operator that feeds each partition to the ML driver's
//! [`kiln_ml::PartitionRound`] ([`physical`]), and the codecs that ship both
//! between client, scheduler and executors ([`codec`]).
//!
//! Imports only from `functions` and `catalog` below it.

pub mod codec;
pub mod logical;
pub mod physical;
