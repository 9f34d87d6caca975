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
# Fleet tests: etcd members and etcdctl, network namespaces with veth pairs and a bridge,
# nftables counters and drop rules inside them; protoc builds the etcd client's gRPC types.
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# The well-known types (google/protobuf/descriptor.proto) that etcd's protos import.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)

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
