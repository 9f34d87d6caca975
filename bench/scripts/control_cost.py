#!/usr/bin/env python3
"""Per-change control cost through the HTTP API of a release relay: the latency of a join (PUT
participant), a leave (DELETE) and a rule naming one participant (POST + DELETE rule) in a room
of N members (fixed addresses, one audio track each).

    python3 bench/scripts/control_cost.py target/release/relay --sizes 10,1000 [--rounds 30]

Each call is timed on a kept-alive connection; medians and p90 over the rounds are printed.
"""
import argparse, http.client, json, re, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("relay")
ap.add_argument("--sizes", default="10,1000")
ap.add_argument("--rounds", type=int, default=30)
a = ap.parse_args()


def run(size):
    data = tempfile.mkdtemp()
    p = subprocess.Popen([a.relay, "--media", "127.0.0.1:0", "--control", "127.0.0.1:0", "--data-dir", data,
                          "--max-participants", str(size + 10), "--max-rule-changes", "100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        host, port = re.search(r"control=([\d.]+):(\d+)", p.stdout.readline()).groups()
        c = http.client.HTTPConnection(host, int(port))

        def call(method, path, body=None):
            t = time.perf_counter()
            c.request(method, path, body=None if body is None else json.dumps(body))
            r = c.getresponse()
            r.read()
            assert r.status < 300, (method, path, r.status)
            return (time.perf_counter() - t) * 1000

        call("PUT", "/v1/rooms/big")
        for i in range(size):
            call("PUT", f"/v1/rooms/big/participants/p{i}",
                 {"address": f"127.0.{i // 250}.{i % 250 + 1}:{20000 + i}", "tracks": [{"ssrc": i + 1, "kind": "audio"}]})
        join, leave, rule = [], [], []
        for r in range(a.rounds):
            join.append(call("PUT", "/v1/rooms/big/participants/x",
                             {"address": "127.0.9.9:9999", "tracks": [{"ssrc": 999999, "kind": "audio"}]}))
            leave.append(call("DELETE", "/v1/rooms/big/participants/x"))
            body = {"match": {"participants": [{"room": "big", "participant": "p0"}]},
                    "basis": {"authority": "A", "reference": f"R{r}", "jurisdiction": "US"},
                    "expires_at": "2099-01-01T00:00:00Z"}
            t = time.perf_counter()
            c.request("POST", "/v1/rules", body=json.dumps(body))
            resp = c.getresponse()
            rid = json.loads(resp.read())["id"]
            rule.append((time.perf_counter() - t) * 1000)
            call("DELETE", f"/v1/rules/{rid}", {"reason": "done"})
        for name, xs in (("join", join), ("leave", leave), ("rule", rule)):
            xs.sort()
            print(f"  room of {size}: {name:5} median {statistics.median(xs):7.2f} ms  p90 {xs[int(len(xs) * 0.9)]:7.2f} ms")
    finally:
        p.kill()
        p.wait()


print(a.relay)
for n in [int(x) for x in a.sizes.split(",")]:
    run(n)
