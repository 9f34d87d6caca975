#!/usr/bin/env python3
"""Latency of the relay's worker on a core that a CPU-bound task shares with it, per
`--worker-priority` setting.

    python3 bench/scripts/contended_core.py target/release/relay target/release/loadgen \
        [--settings normal,fifo:10] [--rounds 3] [--rate 20000] [--seconds 4] [--core 0]

For each round and setting, alternating: a release relay with `--workers 1` pinned to --core, one
busy loop at nice 0 pinned to the same core (the competing work), and loadgen on the other cores
(100 1:1 calls of 200-byte RTP, fixed addresses) for --seconds at --rate packets/s. Prints loss
and loadgen's latency (send to read) and delivery (send to the receiver's socket) per run, then
the median per setting. Every run is bounded: loadgen by --seconds, the relay and the loop are
ended by their PIDs.
"""
import argparse, json, os, re, signal, statistics, subprocess, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("relay")
ap.add_argument("loadgen")
ap.add_argument("--settings", default="normal,fifo:10")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--rate", type=int, default=20000)
ap.add_argument("--seconds", type=float, default=4.0)
ap.add_argument("--core", type=int, default=0)
ap.add_argument("--no-hog", action="store_true", help="leave the relay's core to the relay")
ap.add_argument("--hog-busy-ms", type=float, default=0.0,
                help="the loop works this long, then sleeps as long (0: it never sleeps)")
a = ap.parse_args()
others = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != a.core) or str(a.core)


def run(setting):
    data = tempfile.mkdtemp()
    relay = subprocess.Popen(
        ["taskset", "-c", str(a.core), a.relay, "--media", "127.0.0.1:0", "--control", "127.0.0.1:0",
         "--data-dir", data, "--workers", "1", "--pin", "false", "--worker-priority", setting],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hog = None
    try:
        control = re.search(r"control=(\S+)", relay.stdout.readline()).group(1)
        if not a.no_hog:
            loop = "while True: pass" if a.hog_busy_ms <= 0 else (
                "import time\nb = %f\nwhile True:\n    t = time.perf_counter() + b\n"
                "    while time.perf_counter() < t: pass\n    time.sleep(b)" % (a.hog_busy_ms / 1000))
            hog = subprocess.Popen(["taskset", "-c", str(a.core), "python3", "-c", loop])
        out = subprocess.run(
            ["taskset", "-c", others, a.loadgen, "--control", control, "--rooms", "100", "--participants", "2",
             "--profile", "audio", "--audio-len", "200", "--fixed-address", "--rate", str(a.rate),
             "--duration", str(a.seconds), "--json"],
            capture_output=True, text=True, timeout=a.seconds + 60)
        r = json.loads(out.stdout)
        loss = r["lost"] / max(r["expected"], 1)
        return loss, r["latency_us"], r["delivery_us"], r["received_pps"]
    finally:
        for p in (hog, relay):
            if p is not None:
                p.send_signal(signal.SIGTERM if p is relay else signal.SIGKILL)
                p.wait(timeout=10)


settings = a.settings.split(",")
results = {s: [] for s in settings}
hog = "nothing else" if a.no_hog else "a busy loop" if a.hog_busy_ms <= 0 else f"a loop busy {a.hog_busy_ms} ms of every {2 * a.hog_busy_ms} ms"
print(f"rate {a.rate}/s, {a.seconds} s, relay and {hog} on core {a.core}, "
      f"loadgen on {others}")
print(f"{'setting':<12} {'loss':>7} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'deliv p99':>10} {'recv/s':>8}")
for _ in range(a.rounds):
    for s in settings:
        loss, lat, dl, pps = run(s)
        results[s].append((loss, lat["p50"], lat["p99"], lat["p999"], dl["p99"]))
        print(f"{s:<12} {loss:>7.2%} {lat['p50']:>8} {lat['p99']:>8} {lat['p999']:>9} {dl['p99']:>10} {pps:>8.0f}",
              flush=True)
print("median")
for s in settings:
    cols = list(zip(*results[s]))
    m = [statistics.median(c) for c in cols]
    print(f"{s:<12} {m[0]:>7.2%} {m[1]:>8.0f} {m[2]:>8.0f} {m[3]:>9.0f} {m[4]:>10.0f}")
