//! The parts of `cairn` that tests reuse: the config and key files
//! ([`config`]) and running `cairn-node` processes ([`devnet`]).

pub mod config;
pub mod devnet;
