#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent; a no-op when all is
# there. Needs root (or sudo) only when something is missing.
set -euo pipefail

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
# The SRTP unit tests cross-check against libsrtp through PyPI's pylibsrtp (its wheels bundle
# libsrtp), installed with pip below.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3 python3-pip)

if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if ! python3 -c 'import pylibsrtp' 2>/dev/null; then
    # Debian's own Python refuses pip installs outside a venv unless told otherwise.
    python3 -m pip install -q pylibsrtp 2>/dev/null ||
        python3 -m pip install -q --break-system-packages pylibsrtp
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is required: install Rust (rustup) first" >&2
    exit 1
fi
