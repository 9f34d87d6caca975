#!/usr/bin/env python3
"""Where a fleet rule call's time goes, from the logs of the rule round-trip benchmark.

    RELAY_BENCH_TRACE=/tmp/rtt RELAY_BIN=$PWD/target/release/relay \
        cargo test -p e2e --test fleet -- --ignored --nocapture rule_round_trip
    python3 bench/scripts/fleet_trace.py /tmp/rtt [slowest]

The benchmark posts every rule to relay a; each relay logs the fleet's steps at debug level
with a timestamp (a.log, b.log, c.log) and the test writes each call's start and round trip
(calls.tsv). Prints, per step, p50/p99/max over the calls, then the slowest calls step by step
(milliseconds after the POST was sent). All processes share one clock (one machine).
"""
import re, sys
from datetime import datetime

d = sys.argv[1]
slowest = int(sys.argv[2]) if len(sys.argv) > 2 else 5


def ts(line):
    t = datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return (t - datetime(1970, 1, 1)).total_seconds() * 1e6


def fields(line):
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)}


rules, by_rev = {}, {}
poster = open(f"{d}/a.log").read().splitlines()
for line in poster:
    if "fleet: audit txn committed" in line:
        f = fields(line)
        seq, rev = int(f["seq"]), int(f["revision"])
        by_rev[rev] = seq
        rules[seq] = {"seq": seq, "rev": rev, "commit": ts(line), "txn": int(f["txn_us"]),
                      "event": {}, "applied": {}, "acked": {}, "seen": {}}
for line in poster:
    f = fields(line)
    if "fleet: acks read" in line and int(f["revision"]) in by_rev:
        r = rules[by_rev[int(f["revision"])]]
        r["read"], r["pending"] = ts(line), int(f["pending"])
    elif "fleet: ack seen" in line and int(f["revision"]) in by_rev:
        rules[by_rev[int(f["revision"])]]["seen"][f["node"]] = ts(line)
    elif "fleet: rule call answered" in line and int(f["rule"]) in rules:
        rules[int(f["rule"])]["answered"] = ts(line)
for node in "abc":
    for line in open(f"{d}/{node}.log"):
        f = fields(line)
        if "revision" not in f or int(f["revision"]) not in by_rev:
            continue
        r = rules[by_rev[int(f["revision"])]]
        if "fleet: watch event" in line and "/rules/" in line:
            r["event"][node] = ts(line)
        elif "fleet: rule applied" in line:
            r["applied"][node] = ts(line)
        elif "fleet: ack written" in line:
            r["acked"][node] = ts(line)
for line in open(f"{d}/calls.tsv"):
    seq, start, took = (int(x) for x in line.split("\t"))
    if seq in rules:
        rules[seq]["start"], rules[seq]["took"] = start, took

done = [r for r in rules.values() if "took" in r and "answered" in r and len(r["acked"]) == 3]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, len(xs) * p // 100)]


def show(name, xs):
    if xs:
        print(f"{name:44s} n={len(xs):3d}  p50 {pct(xs, 50) / 1e3:6.2f}  p99 {pct(xs, 99) / 1e3:6.2f}"
              f"  max {max(xs) / 1e3:6.2f} ms")


print(f"{len(done)} calls")
show("POST to 201 (client)", [r["took"] for r in done])
show("  POST sent -> txn committed", [r["commit"] - r["start"] for r in done])
show("    of which the etcd txn call", [r["txn"] for r in done])
show("  committed -> last ack written", [max(r["acked"].values()) - r["commit"] for r in done])
for n in "abc":
    show(f"    {n}: committed -> rule watch event", [r["event"][n] - r["commit"] for r in done if n in r["event"]])
    show(f"    {n}: watch event -> applied", [r["applied"][n] - r["event"][n] for r in done if n in r["applied"] and n in r["event"]])
    show(f"    {n}: applied -> ack written", [r["acked"][n] - r["applied"][n] for r in done if n in r["applied"]])
show("  last ack written -> answered", [r["answered"] - max(r["acked"].values()) for r in done])
show("  (poster) committed -> acks read", [r["read"] - r["commit"] for r in done if "read" in r])
watched = [r for r in done if r.get("pending") and len(r["seen"]) == r["pending"]]
show("  (acks pending at the read) ack written -> seen",
     [r["seen"][n] - r["acked"][n] for r in watched for n in r["seen"]])
print("slowest calls, ms after the POST was sent:")
for r in sorted(done, key=lambda r: -r["took"])[:slowest]:
    at = lambda t: f"{(t - r['start']) / 1e3:.2f}"
    steps = lambda m: " ".join(f"{n} {at(t)}" for n, t in sorted(m.items()))
    print(f"  rule {r['seq']} (rev {r['rev']}) {r['took'] / 1e3:.2f} ms: committed {at(r['commit'])};"
          f" applied {steps(r['applied'])}; acks written {steps(r['acked'])};"
          f" acks read {at(r['read']) if 'read' in r else '-'} ({r.get('pending')} pending);"
          f" seen {steps(r['seen']) or '-'}; answered {at(r['answered'])}")
