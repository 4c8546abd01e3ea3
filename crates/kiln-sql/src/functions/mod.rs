//! The scalar functions Kiln adds to SQL, registered in every role:
//! `predict` / `predict_proba` ([`predict`]), the feature functions
//! ([`features`]) and PII detection and masking ([`pii`]); plus the
//! conversion of Arrow columns into training batches ([`batch`]).
//!
//! Imports only from `catalog` below it.

pub mod batch;
pub mod features;
pub mod pii;
pub mod predict;

pub use predict::kiln_udfs;
