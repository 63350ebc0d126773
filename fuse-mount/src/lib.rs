//! # cairn-fuse-mount
//!
//! A POSIX view of a bucket over `cairn-client`, mounted with `fuser`.
//! It never talks to nodes directly. Built in a later issue.
