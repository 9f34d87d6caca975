#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end tests
# against the real binary, once per data-plane backend.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests start the real binary, built as it ships (release): floods and timing
# tests measure what an operator would run.
cargo build --workspace --bins
cargo build --release -p relay -p loadgen
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export RELAY_BIN="$target_dir/release/relay"
export LOADGEN_BIN="$target_dir/release/loadgen"

# Unit, property and in-process data-plane tests (these run both backends themselves).
cargo test --workspace --exclude e2e
# Every end-to-end test with the default backend, then the suites that exercise the data path
# again with io_uring (io_uring fails clearly where the kernel forbids it). The first run includes
# the Debian package made from the release binaries above (tests/package.rs, with cargo-deb,
# dpkg-deb, systemd-analyze and strace), the monitoring files checked with promtool, the Python
# client's parser and a real Prometheus (tests/monitoring.rs), the control plane, WebRTC signaling
# and the fleet store, which do not depend on the backend.
echo "== end-to-end tests with --backend mmsg =="
RELAY_TEST_BACKEND=mmsg cargo test -p e2e
echo "== data-path end-to-end tests with --backend io_uring =="
RELAY_TEST_BACKEND=io_uring cargo test -p e2e --test forwarding --test gso --test hardening \
    --test stun --test rules --test churn --test interop \
    --test webrtc_aiortc --test webrtc_flood --test webrtc_load --test fleet
