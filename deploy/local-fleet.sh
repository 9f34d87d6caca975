#!/usr/bin/env bash
# A local fleet to try by hand: one etcd member and three relays (HK, CN, US), all on loopback,
# data in a fresh temporary directory. Ctrl-C stops everything. Needs `etcd` (Debian's
# etcd-server; tests/install-deps.sh installs it) and free ports 2379-2380, 41001-41003,
# 42001-42003 and 7781-7783.
#
#   bash deploy/local-fleet.sh
#
# Then, in another shell: a rule posted on relay-1 is in force on all three when the call
# returns; "relays_in" limits it to the relays of those regions:
#
#   curl -s -X POST 127.0.0.1:7781/v1/rules -d '{"match": {"regions": ["CN"]}, "relays_in": ["CN"],
#     "basis": {"authority": "Court", "reference": "1", "jurisdiction": "CN"},
#     "expires_at": "2030-01-01T00:00:00Z"}'
#   curl -s 127.0.0.1:7782/metrics | grep relay_fleet_
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p relay
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$dir"' EXIT
etcd --data-dir "$dir/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    >"$dir/etcd.log" 2>&1 &
for _ in $(seq 50); do
    curl -sf http://127.0.0.1:2379/health >/dev/null && break
    sleep 0.1
done
regions=(HK CN US)
for n in 1 2 3; do
    target/release/relay --etcd http://127.0.0.1:2379 --node "relay-$n" \
        --region "${regions[$((n - 1))]}" --media "127.0.0.1:4100$n" \
        --control "127.0.0.1:778$n" --trunk "127.0.0.1:4200$n" --data-dir "$dir/relay-$n" &
done
wait
