//! # cairn-s3-gateway
//!
//! An S3-compatible HTTP API over `cairn-client`, built on `s3s` 0.14.1
//! for the protocol (SigV4, XML, routing). It runs where the user's key
//! is and never talks to nodes directly; nodes see what any client sends.
//!
//! - [`gateway`]: the service's state; [`s3`]: the `S3` trait, with
//!   [`objects`], [`listing`] and [`uploads`] answering the operations;
//! - [`body`]: streaming request bodies into the encoder (with digest
//!   checks) and decoded objects out;
//! - [`keys`]: access keys; [`server`]: HTTP, TLS, limits, logging;
//!   [`metrics`]: Prometheus; [`convert`]: errors and types to S3's.
//!
//! docs/S3.md lists what is supported.

pub mod body;
pub mod convert;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod listing;
pub mod metrics;
pub mod objects;
pub mod s3;
pub mod server;
pub mod uploads;

pub use error::Error;
pub use gateway::Gateway;
pub use keys::{AccessKey, Keys};
