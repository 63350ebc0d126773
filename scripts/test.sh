#!/usr/bin/env bash
# The whole test suite: unit, property, golden-bytes, invariant and
# end-to-end tests of every crate.
#
# `cargo test` builds a package's binaries only for that package's own
# integration tests, and the end-to-end tests run `cairn` and `cairn-node`:
# build them first, so the suite always tests the binaries of this commit
# (tests::binary() refuses one older than its sources). --no-fail-fast: one
# failing suite must not hide the others.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast "$@"
