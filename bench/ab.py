"""Cache hits of two gateway binaries side by side, interleaved (same emulator, same machine
state), to tell a change of the code from the machine's noise:

    python3 bench/ab.py <old wdt-gateway binary> [rounds]

Build the old binary from another worktree (e.g. `git worktree add /tmp/old <rev>` and
`CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p wdt-gateway` there) and the new one with
`bench/run.sh` or `cargo build --release -p wdt-gateway -p wdt-emulator`. Prints each binary's
median requests/s for REST and GraphQL hits and every round's figure.
"""
import json, os, statistics, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b

logdir = tempfile.mkdtemp(prefix="wdt-ab-")
servers = b.Servers(logdir)
try:
    emu_port = b.free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    servers.start("emulator", [os.path.join(b.BIN, "wdt-emulator"), "--listen", f"127.0.0.1:{emu_port}", "--skus", "2000"])
    b.wait_for(f"{emulator}/__admin/summary")
    bins = {"old": sys.argv[1], "new": os.path.join(b.BIN, "wdt-gateway")}
    urls = {}
    for name, path in bins.items():
        port = b.free_port()
        env = b.gateway_env(port, emulator, {"WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": "0"})
        if name == "old" and not os.environ.get("WDT_AB_OLD_HAS_FEED"):
            # A binary from before the change feed (issue 18) refuses its settings; set
            # WDT_AB_OLD_HAS_FEED=1 for a newer one, so both run with the feed off.
            env.pop("WDT_GATEWAY_CHANGE_FEED_INTERVAL", None); env.pop("WDT_GATEWAY_STATE_DIR", None)
        servers.start(f"gw-{name}", [path], env)
        urls[name] = f"http://127.0.0.1:{port}"
        b.wait_for(f"{urls[name]}/healthz")
    token = b.hs256({"sub": "bench", "scope": b.SCOPES, "exp": int(time.time()) + 3600})
    rest_path = "/v1/stock?" + "&".join(f"spec_no={s}" for s in b.SPECS)
    body = json.dumps({"query": b.GRAPHQL, "variables": {"specs": b.SPECS}}).encode()
    for url in urls.values():
        for _ in range(2):
            b.get(f"{url}/graphql", token, body); b.get(f"{url}{rest_path}", token)
    lua = os.path.join(b.ROOT, "bench", "graphql.lua"); rest_lua = os.path.join(b.ROOT, "bench", "bearer.lua")
    env = {"WDT_BENCH_TOKEN": token, "WDT_BENCH_BODY": body.decode()}
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    runs = {}
    for r in range(rounds):
        for kind, path, script in [("rest", rest_path, rest_lua), ("graphql", "/graphql", lua)]:
            for name, url in urls.items():
                x = b.wrk(f"{url}{path}", 8, 32, script, env)
                runs.setdefault(f"{name}_{kind}", []).append(x["rps"])
                print(r, name, kind, x["rps"], file=sys.stderr)
    for k, v in sorted(runs.items()):
        print(k, round(statistics.median(v)), [round(x) for x in v])
finally:
    servers.stop_all()
