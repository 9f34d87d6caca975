#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end tests
# against the real binary, once per data-plane backend.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests start the real binary; build it first.
cargo build --workspace --bins

# Unit, property and end-to-end tests on the default backend.
cargo test --workspace
# The end-to-end tests again on each backend.
for backend in mmsg; do
    echo "== end-to-end tests with --backend $backend =="
    RELAY_TEST_BACKEND=$backend cargo test -p e2e
done
