//! What the lake stores and how it is read: the lake directory with its
//! catalog and snapshots ([`lake`]), the model registry ([`registry`]), the
//! stored forms of checks, fitted transforms and ingest manifests
//! ([`check`], [`transform`], [`manifest`]), and the table providers every
//! role reads the lake through ([`tables`]).
//!
//! The bottom layer of kiln-sql: imports no other folder of the crate.

pub mod check;
pub mod lake;
pub mod manifest;
pub mod quote;
pub mod registry;
pub mod tables;
pub mod transform;
