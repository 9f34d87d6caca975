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
if ! command -v cargo >/dev/null; then
    echo "cargo is required: install Rust (rustup) first" >&2
    exit 1
fi
