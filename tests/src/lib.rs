//! # cairn-tests
//!
//! End-to-end tests of Cairn and the workspace's invariants. `TestCluster`
//! (N real nodes on loopback with fault helpers) lands with the network
//! issues; today this crate holds the dependency-graph checks in
//! `tests/invariants.rs`. No other crate may depend on this one.
