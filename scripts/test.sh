#!/usr/bin/env bash
# The whole test suite: unit, property, golden-bytes, invariant and
# end-to-end tests of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --workspace --locked "$@"
