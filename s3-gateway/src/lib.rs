//! # cairn-s3-gateway
//!
//! An S3-compatible HTTP API (SigV4, XML, multipart) over `cairn-client`.
//! It runs where the user's key is and never talks to nodes directly.
//! Built in a later issue.
