//! The parts of `cairn` that tests reuse: the config and key files
//! ([`config`]), running `cairn-node` processes ([`devnet`]) and the S3
//! gateway ([`gateway`]).

pub mod config;
pub mod devnet;
pub mod gateway;
pub mod mount;
