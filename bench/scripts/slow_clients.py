#!/usr/bin/env python3
"""Probe latency of /healthz while N slow clients trickle request bodies at the control API.

Starts the given relay binary on loopback (ephemeral ports, a temporary data directory), opens N
connections that each send `POST /healthz` with `Content-Length: 1000000` and then one byte a
second, and meanwhile probes GET /healthz every 100 ms on fresh connections (3 s timeout).
Prints the probe latencies (p50, p99, max, timeouts) and how long the relay kept the slow
connections open.

    python3 bench/scripts/slow_clients.py target/release/relay [--clients 64] [--seconds 15]
"""
import argparse, socket, subprocess, tempfile, time, statistics, re

ap = argparse.ArgumentParser()
ap.add_argument("relay")
ap.add_argument("--clients", type=int, default=64)
ap.add_argument("--seconds", type=float, default=15)
a = ap.parse_args()

data = tempfile.mkdtemp()
p = subprocess.Popen([a.relay, "--media", "127.0.0.1:0", "--control", "127.0.0.1:0", "--data-dir", data,
                      "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    line = p.stdout.readline()
    host, port = re.search(r"control=([\d.]+):(\d+)", line).groups()
    addr = (host, int(port))
    slow = []
    for _ in range(a.clients):
        s = socket.create_connection(addr)
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        s.setblocking(False)
        slow.append([s, time.monotonic(), None])
    lat, timeouts = [], 0
    start = last_tick = time.monotonic()
    while time.monotonic() - start < a.seconds:
        if time.monotonic() - last_tick >= 1:
            last_tick = time.monotonic()
            for c in slow:
                if c[2] is not None:
                    continue
                try:
                    if c[0].recv(4096) == b"":
                        c[2] = time.monotonic() - c[1]
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    c[2] = time.monotonic() - c[1]
                    continue
                try:
                    c[0].send(b" ")
                except OSError:
                    c[2] = time.monotonic() - c[1]
        t = time.monotonic()
        try:
            q = socket.create_connection(addr, timeout=3)
            q.settimeout(3)
            q.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while q.recv(4096):
                pass
            q.close()
            lat.append((time.monotonic() - t) * 1000)
        except OSError:
            timeouts += 1
        time.sleep(0.1)
    lat.sort()
    cut = [c[2] for c in slow if c[2] is not None]
    print(f"{a.relay}: {a.clients} slow clients, {len(lat)} probes answered, {timeouts} timed out (3 s)")
    if lat:
        print(f"  /healthz ms: p50 {statistics.median(lat):.2f} p99 {lat[int(len(lat)*0.99)]:.2f} max {lat[-1]:.2f}")
    print(f"  slow connections closed by the relay: {len(cut)} of {a.clients}" +
          (f", after {min(cut):.1f}-{max(cut):.1f} s" if cut else ""))
finally:
    p.kill()
    p.wait()
