#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent; a no-op when all is
# there. Needs root (or sudo) only when something is missing.
set -euo pipefail

# `--bench`: also what the budget runner compares and measures with (bench/, docs/BENCHMARKS.md):
# rtpengine (Debian rtpengine-daemon) and perf (linux-perf).
bench=false
[ "${1:-}" = "--bench" ] && bench=true

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v sqlite3 >/dev/null || need+=(sqlite3)
perl -MMaxMind::DB::Writer::Tree -e1 2>/dev/null || need+=(libmaxmind-db-writer-perl)
# Interop tests: ffmpeg (libx264, libopus) and GStreamer send and receive RTP through the relay.
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v gst-launch-1.0 >/dev/null || need+=(gstreamer1.0-tools)
gst_has() { command -v gst-inspect-1.0 >/dev/null && gst-inspect-1.0 --exists "$1"; }
gst_has videotestsrc || need+=(gstreamer1.0-plugins-base)     # videotestsrc
gst_has rtpbin || need+=(gstreamer1.0-plugins-good)           # udpsrc/udpsink, rtpbin, rtph264(de)pay
gst_has x264enc || need+=(gstreamer1.0-plugins-ugly)          # x264enc
gst_has avdec_h264 || need+=(gstreamer1.0-libav)              # avdec_h264
# WebRTC tests: real browsers (Chromium driven by playwright-core from npm, Firefox driving its own
# page) and aiortc (PyPI) as an independent stack; each runs in a network namespace with only lo.
command -v chromium >/dev/null || need+=(chromium)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)   # an independent DTLS-SRTP client (s_client)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# Packaging and monitoring tests: the unit is checked by systemd-analyze, the metrics, alert rules
# and dashboard queries by promtool and a real Prometheus server, the metrics text also by the
# Python client's parser.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v strace >/dev/null || need+=(strace)      # the unit's syscall filter against real use
command -v promtool >/dev/null || need+=(prometheus)
python3 -c 'import prometheus_client' 2>/dev/null || need+=(python3-prometheus-client)
# The SRTP unit tests cross-check against libsrtp through PyPI's pylibsrtp (its wheels bundle
# libsrtp), installed with pip below.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3 python3-pip)
# Fleet tests: etcd members and etcdctl, network namespaces with veth pairs and a bridge,
# nftables counters and drop rules inside them; protoc builds the etcd client's gRPC types.
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# The well-known types (google/protobuf/descriptor.proto) that etcd's protos import.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if $bench; then
    command -v rtpengine >/dev/null || need+=(rtpengine-daemon)
    command -v perf >/dev/null || need+=(linux-perf)
fi

if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# The control API's OpenAPI document is checked by an independent validator.
python3 -c 'import openapi_spec_validator' 2>/dev/null \
    || python3 -m pip install -q openapi-spec-validator
# playwright-core only (no browser download: it drives Debian's /usr/bin/chromium).
browser_dir="$(dirname "$0")/browser"
[ -d "$browser_dir/node_modules/playwright-core" ] || npm ci --prefix "$browser_dir" --no-audit --no-fund
# aiortc in a venv of its own (Debian's python3-aiortc is too old).
"$browser_dir/.venv/bin/python" -c 'import aiortc' 2>/dev/null || {
    python3 -m venv "$browser_dir/.venv"
    "$browser_dir/.venv/bin/pip" install -q aiortc==1.16.0
}
if ! python3 -c 'import pylibsrtp' 2>/dev/null; then
    # Debian's own Python refuses pip installs outside a venv unless told otherwise.
    python3 -m pip install -q pylibsrtp 2>/dev/null ||
        python3 -m pip install -q --break-system-packages pylibsrtp
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is required: install Rust (rustup) first" >&2
    exit 1
fi
# A python3 other than Debian's (pyenv, a venv) first on PATH does not see the Debian module: give
# it the same parser from PyPI.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install --quiet prometheus-client
fi
# The Debian package of the relay (tests/tests/package.rs).
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
