#!/usr/bin/env python3
"""The wdt-gateway benchmark: starts the emulator, the gateway and the bare-axum ceiling on
loopback, runs every scenario, and writes one JSON record (bench/results/<date>-<mode>.json).
`bench/report.py` turns a record into the tables of docs/PERFORMANCE.md.

Servers run on CPU 1 and the load generator on CPU 0 (taskset), so they do not compete; the
throughput targets are interleaved over several rounds and the medians reported. Run it through
bench/run.sh, which builds the release binaries first.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where bench/run.sh built the release binaries (cargo honours CARGO_TARGET_DIR).
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
SECRET = "bench-secret-0123456789abcdef0123456789"
SCOPES = "stock:read stock:write stock-sync:read stock-sync:write"
# The feed scenario's callers also register a webhook endpoint.
FEED_SCOPES = SCOPES + " webhooks:read webhooks:write"
# The cached GraphQL query and REST read of the throughput scenarios: 10 SKUs.
SPECS = [f"G{g:05}-01" for g in range(1, 11)]
GRAPHQL = ("query Stock($specs: [String!]!) { stock(specNos: $specs) "
           "{ specNo warehouseNo onHand available } }")

SERVER_CPU = "1"
LOAD_CPU = "0"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up")


def wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: nothing listens on {port}")


def pinned(cpu, argv):
    return ["taskset", "-c", cpu] + argv if shutil.which("taskset") and os.cpu_count() > 1 else argv


class Servers:
    """The processes under test; stopped on exit."""

    def __init__(self, logdir):
        self.procs = []
        self.logdir = logdir

    def start(self, name, argv, env=None):
        log = open(os.path.join(self.logdir, f"{name}.log"), "w")
        proc = subprocess.Popen(pinned(SERVER_CPU, argv), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.remove(proc)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wrk(url, seconds, connections, script=None, env=None):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(pinned(LOAD_CPU, argv + [url]), capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True).stdout
    return parse_wrk(out)


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out):
    def latency(p):
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99), "requests": requests,
            "errors": errors}


def get(url, token=None, data=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def counters(emulator):
    return json.loads(get(f"{emulator}/__admin/counters"))["methods"]


def vendor_calls(emulator, method="stock_query_detail.php"):
    return counters(emulator).get(method, {}).get("calls", 0)


def driver(args, gateway, emulator, token, scenario):
    argv = [os.path.join(BIN, "wdt-bench-driver"), "--gateway", gateway, "--emulator", emulator,
            "--token", token] + scenario
    out = subprocess.run(pinned(LOAD_CPU, argv), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: driver {scenario[0]} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except Exception:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "rustc": version(["rustc", "--version"]), "wrk": version(["wrk", "--version"]).split(" Copyright")[0],
            "commit": version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])}


def gateway_env(port, emulator, extra=None):
    env = {
        "WDT_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "WDT_FLAGSHIP_URL": f"{emulator}/openapi", "WDT_SID": "wdtapi3", "WDT_APPKEY": "wdt_test",
        "WDT_APPSECRET": "testsecret:testsalt",
        "WDT_ENTERPRISE_URL": f"{emulator}/openapi2/", "WDT_ENTERPRISE_SID": "test2",
        "WDT_ENTERPRISE_APPKEY": "test2-xx", "WDT_ENTERPRISE_APPSECRET": "12345",
        "WDT_GATEWAY_JWT_SECRET": SECRET,
        "WDT_GATEWAY_CLIENT_RATE_LIMIT": "0",
        "WDT_GATEWAY_LOG": "warn",
        # The change feed (on by default since issue 18) is the `feed` scenario's subject; the
        # other scenarios measure what they always have, stock judged by TTL alone. Its state
        # files would go under ./state otherwise.
        "WDT_GATEWAY_CHANGE_FEED_INTERVAL": "0",
        "WDT_GATEWAY_STATE_DIR": state_dir(),
    }
    env.update(extra or {})
    return env


_STATE = []


def state_dir():
    """A fresh directory for a gateway's state files (the change feed's cursors)."""
    if not _STATE:
        _STATE.append(tempfile.mkdtemp(prefix="wdt-bench-state-"))
    return tempfile.mkdtemp(dir=_STATE[0])


def mint_tokens(n, prefix="bench-", scopes=SCOPES):
    """`n` tokens with every scope for the subjects bench-0, bench-1, …, joined by commas: the
    mixes' callers, as a fleet of frontends would be (each keeps to its share of the ERP quota,
    vendor.subject_share_percent)."""
    return ",".join(
        subprocess.run([os.path.join(BIN, "wdt-gateway"), "token", "--sub", f"{prefix}{i}",
                        "--scope", scopes, "--ttl", "4h"], capture_output=True, text=True,
                       env={**os.environ, "WDT_GATEWAY_JWT_SECRET": SECRET},
                       check=True).stdout.strip()
        for i in range(n))


class _Done(Exception):
    """Ends a run of one scenario (--only)."""


def hs256(claims):
    """An HS256 token signed with the bench secret (what `wdt-gateway token` mints)."""
    import base64
    import hashlib
    import hmac

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def gateway_vendor_calls(gateway):
    """ERP calls a gateway made (its wdt_vendor_calls_total, all series)."""
    text = get(f"{gateway}/metrics").decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("wdt_vendor_calls_total{"))


def zipf_choices(rng, n, s, k):
    """k draws from 1..n with P(i) proportional to 1/i^s."""
    weights = [1 / (i ** s) for i in range(1, n + 1)]
    return rng.choices(range(n), weights=weights, k=k)


def tenants_scenario(servers, smoke, seconds, rounds, connections, logdir):
    """Many tenants on one gateway: idle memory per tenant, and the cost of a cache hit when
    traffic spreads over 1,000 tenants (Zipf over tenants and over SKUs) against the same
    traffic for one tenant: the same number of distinct keys with the same frequencies, mapped
    onto one account's SKUs. Both gateways keep stock an hour, so every timed request is a hit."""
    import random

    n = 50 if smoke else 1000
    skus = 100
    names = [f"t{i:04}" for i in range(1, n + 1)]
    solo = "solo"
    emu_port = free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    accounts = os.path.join(logdir, "accounts.toml")

    def credentials(name):
        return (f'sid = "{name}"\nappkey = "{name}-key"\nappsecret = "{name}-secret:{name}-salt"\n'
                f'enterprise_sid = "{name}-e"\nenterprise_appkey = "{name}-ekey"\n'
                f'enterprise_appsecret = "{name}-esecret"\n')

    with open(accounts, "w") as f:
        for i, name in enumerate(names):
            f.write(f"[accounts.{name}]\nseed = {i + 1}\nskus = {skus}\n{credentials(name)}\n")
        f.write(f"[accounts.{solo}]\nseed = 99\nskus = 12000\n{credentials(solo)}\n")
    started = time.monotonic()
    servers.start("emulator-tenants", [os.path.join(BIN, "wdt-emulator"), "--listen",
                                       f"127.0.0.1:{emu_port}", "--skus", str(skus),
                                       "--accounts-file", accounts])
    wait_for(f"{emulator}/__admin/summary", timeout=300)
    print(f"tenants: emulator with {n + 1} accounts up in {time.monotonic() - started:.1f} s",
          file=sys.stderr)

    def tenants_file(path, tenants):
        with open(path, "w") as f:
            for name in tenants:
                f.write(f"[tenants.{name}]\nflagship_url = \"{emulator}/openapi\"\n"
                        f'enterprise_url = "{emulator}/openapi2/"\n{credentials(name)}\n')

    gateways = {}
    for label, tenants in [("one_tenant", [solo]), ("many_tenants", names)]:
        file = os.path.join(logdir, f"tenants-{label}.toml")
        tenants_file(file, tenants)
        config = os.path.join(logdir, f"gateway-{label}.toml")
        with open(config, "w") as f:
            f.write(f'tenants_file = "{file}"\n[cache]\nstock_ttl_secs = 3600\n')
        port = free_port()
        env = {
            "WDT_GATEWAY_LISTEN": f"127.0.0.1:{port}", "WDT_GATEWAY_CONFIG": config,
            "WDT_GATEWAY_JWT_SECRET": SECRET, "WDT_GATEWAY_CLIENT_RATE_LIMIT": "0",
            "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": "0", "WDT_GATEWAY_LOG": "warn",
            # 1,000 feeds would poll the ERP 200 times a second: not this scenario's subject.
            "WDT_GATEWAY_CHANGE_FEED_INTERVAL": "0", "WDT_GATEWAY_STATE_DIR": state_dir(),
        }
        proc = servers.start(f"gateway-{label}", [os.path.join(BIN, "wdt-gateway")], env)
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/healthz", timeout=120)
        time.sleep(2)
        gateways[label] = (proc, url, len(tenants), rss_mib(proc.pid))

    exp = int(time.time()) + 4 * 3600
    tokens = {name: hs256({"sub": "bench", "scope": "stock:read", "exp": exp, "tenant": name})
              for name in names + [solo]}
    rng = random.Random(17)
    lines = 2_000 if smoke else 20_000
    tenant_draws = zipf_choices(rng, n, 1.1, lines)
    sku_draws = zipf_choices(rng, skus // 2, 1.1, lines)
    spec = [f"G{k + 1:05}-01" for k in range(skus // 2)]
    many = [(names[t], spec[k]) for t, k in zip(tenant_draws, sku_draws)]
    # The same stream for one tenant: each distinct (tenant, SKU) becomes a SKU of its own.
    solo_specs = json.loads(get(f"{emulator}/__admin/summary?account={solo}"))["spec_nos"]
    order = list(dict.fromkeys(many))
    if len(order) > len(solo_specs):
        raise SystemExit(f"bench: {solo} has {len(solo_specs)} SKUs for {len(order)} keys")
    mapped = {pair: solo_specs[i] for i, pair in enumerate(order)}
    requests = {"one_tenant": [(solo, mapped[pair]) for pair in many], "many_tenants": many}
    result = {"tenants": n, "skus_per_tenant": skus, "requests_in_rotation": lines}
    targets = {}
    for label, (proc, url, count, idle) in gateways.items():
        pairs = sorted(set(requests[label]))
        for name, sku in pairs:
            get(f"{url}/v1/stock?spec_no={sku}", tokens[name])
            get(f"{url}/v1/stock?spec_no={sku}", tokens[name])
        path = os.path.join(logdir, f"requests-{label}.txt")
        with open(path, "w") as f:
            for name, sku in requests[label]:
                f.write(f"{tokens[name]} /v1/stock?spec_no={sku}\n")
        targets[label] = (url, path)
        result[label] = {"tenants": count, "idle_rss_mib": idle, "distinct_keys": len(pairs),
                         "warm_rss_mib": rss_mib(proc.pid)}
    result["idle_kib_per_tenant"] = (
        (result["many_tenants"]["idle_rss_mib"] - result["one_tenant"]["idle_rss_mib"]) * 1024
        / max(n - 1, 1))
    calls_before = {label: gateway_vendor_calls(url) for label, (url, _) in targets.items()}
    runs = {label: [] for label in targets}
    script = os.path.join(ROOT, "bench", "tenants.lua")
    # This machine's rounds dip by up to a quarter now and then: more rounds, and each round's
    # two runs compared with each other (they share the machine's state) as well as the medians.
    rounds = 1 if smoke else 9
    result["rounds"] = rounds
    for r in range(rounds):
        for label, (url, path) in targets.items():
            runs[label].append(wrk(f"{url}/", seconds, connections, script,
                                   {"WDT_BENCH_REQUESTS": path}))
            print(f"round {r + 1}/{rounds} tenants {label}: {runs[label][-1]}", file=sys.stderr)
    for label, results in runs.items():
        result[label].update({k: statistics.median(x[k] for x in results)
                              for k in ("rps", "p50_ms", "p99_ms")})
        result[label]["errors"] = sum(x["errors"] for x in results)
        result[label]["rounds"] = results
    result["vendor_calls_during_hits"] = sum(
        gateway_vendor_calls(url) - calls_before[label] for label, (url, _) in targets.items())
    result["many_vs_one"] = result["many_tenants"]["rps"] / result["one_tenant"]["rps"]
    result["many_vs_one_paired"] = statistics.median(
        m["rps"] / o["rps"] for m, o in zip(runs["many_tenants"], runs["one_tenant"]))
    for proc, *_ in gateways.values():
        servers.stop(proc)
    return result

def feed_metrics(gateway):
    """The gateway's wdt_change_feed_* counters, summed over tenants: polls by result, ERP
    calls, rows and plans."""
    out = {}
    for line in get(f"{gateway}/metrics").decode().splitlines():
        m = re.match(r'^wdt_change_feed_(polls|erp_calls|rows|plans)_total\{([^}]*)\} ([\d.e+]+)$',
                     line)
        if not m:
            continue
        result = re.search(r'result="([^"]*)"', m.group(2))
        key = f"polls_{result.group(1)}" if m.group(1) == "polls" and result else m.group(1)
        out[key] = out.get(key, 0) + float(m.group(3))
    return out


def feed_scenario(servers, smoke):
    """Live stock: the realistic mix twice on fresh gateways, with the change feed off (stock
    judged by its 30 s TTL, as before the feed) and on (a poll every 5 s; fed stock kept 600 s
    while the feed reports). Meanwhile the ERP changes by itself: a direct stock change through
    the emulator's admin route every 2 s (Zipf over the 100 most read SKUs, warehouses other
    than the takes'), besides the mix's stock takes through the gateway. Each run has a warm-up
    that is not counted, then the measured phase: reads and their `Age`, and every ERP call
    (the emulator's counters, so the feed's own polls too). With the feed on, two GraphQL
    subscribers (`stockChanged` over graphql-transport-ws: one on the changed SKUs, one on
    every SKU) time each change from its answer to its event."""
    interval = 5
    ttl = 30
    quota = 3600
    warmup = 4 if smoke else 60
    measured = 5 if smoke else 120
    direct_every = 1 if smoke else 2
    emu_port = free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    emu = servers.start("emulator-feed", [os.path.join(BIN, "wdt-emulator"), "--listen",
                                          f"127.0.0.1:{emu_port}", "--skus", "2000"])
    wait_for(f"{emulator}/__admin/summary")
    tokens = mint_tokens(8, scopes=FEED_SCOPES)
    result = {"interval_s": interval, "ttl_s": ttl, "fed_ttl_s": 600, "quota_per_minute": quota,
              "warmup_s": warmup, "measured_s": measured, "direct_every_s": direct_every}
    for label, feed_interval in [("ttl_only", 0), ("feed_on", interval)]:
        # The same data as the mix's (seed 42, 2,000 SKUs), counters cleared.
        post_json(f"{emulator}/__admin/reset", {"seed": 42, "skus": 2000}, timeout=60)
        post_json(f"{emulator}/__admin/faults", {"calls_per_minute": quota}, method="PUT")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = servers.start(f"gateway-feed-{label}", [os.path.join(BIN, "wdt-gateway")],
                             gateway_env(port, emulator, {
                                 "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": str(quota),
                                 "WDT_GATEWAY_CHANGE_FEED_INTERVAL": str(feed_interval),
                                 # The driver's webhook receiver is on loopback.
                                 "WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}))
        wait_for(f"{url}/healthz")
        argv = ["mix", "--warmup", str(warmup), "--duration", str(measured),
                "--clients", "16" if smoke else "64", "--rate", "10", "--zipf", "1.1",
                "--take-every", "2" if smoke else "5", "--ttl", str(ttl),
                "--direct-every", str(direct_every), "--direct-skus", "100",
                # Two changes of a row within one interval may arrive as one event.
                "--change-gap", str(3 * interval)]
        if feed_interval:
            argv += ["--subscribe", "--webhook", "--drain", str(2 * interval + 5)]
        run = driver(None, url, emulator, tokens, argv)
        run["feed_interval_s"] = feed_interval
        run["vendor_rate_limited"] = sum(
            c.get("rate_limited", 0) for c in counters(emulator).values())
        run["feed_metrics"] = feed_metrics(url)
        print(f"feed {label}: {run['requests']} requests, {run['erp_calls']} ERP calls "
              f"({run['erp_calls_per_1000']:.1f} per 1,000), age p99 {run['age_p99_s']} s",
              file=sys.stderr)
        result[label] = run
        servers.stop(proc)
    servers.stop(emu)
    off, on = result["ttl_only"]["erp_calls_per_1000"], result["feed_on"]["erp_calls_per_1000"]
    result["erp_calls_ratio"] = off / on if on else None
    return result


def post_json(url, body, method="POST", timeout=10):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="about a second per scenario (CI)")
    ap.add_argument("--out", help="where to write the JSON record")
    ap.add_argument("--only", choices=["tenants", "feed"],
                    help="run one scenario alone (its record has only that section)")
    args = ap.parse_args()
    smoke = args.smoke
    seconds = 1 if smoke else 10
    rounds = 1 if smoke else 5
    connections = 32

    logdir = tempfile.mkdtemp(prefix="wdt-bench-")
    servers = Servers(logdir)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "mode": "smoke" if smoke else "full", "machine": machine(),
              "settings": {"seconds": seconds, "rounds": rounds, "connections": connections,
                           "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU}}
    try:
        if args.only == "tenants":
            record["tenants"] = tenants_scenario(servers, smoke, seconds, rounds, connections,
                                                 logdir)
            raise _Done
        if args.only == "feed":
            record["feed"] = feed_scenario(servers, smoke)
            raise _Done
        # Some generated SKUs are deleted ones: enough live ones for 100,000 entries.
        skus = 2_000 if smoke else 105_000
        emu_port = free_port()
        emulator = f"http://127.0.0.1:{emu_port}"
        servers.start("emulator", [os.path.join(BIN, "wdt-emulator"), "--listen",
                                   f"127.0.0.1:{emu_port}", "--skus", str(skus)])
        wait_for(f"{emulator}/__admin/summary")

        gw_port = free_port()
        gateway = f"http://127.0.0.1:{gw_port}"
        # Quota well above what the scenarios need: the quota is the mix scenario's subject.
        gw = servers.start("gateway", [os.path.join(BIN, "wdt-gateway")],
                           gateway_env(gw_port, emulator, {"WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": "0"}))
        wait_for(f"{gateway}/healthz")
        time.sleep(0.5)
        record["memory"] = {"idle_rss_mib": rss_mib(gw.pid)}
        token = subprocess.run([os.path.join(BIN, "wdt-gateway"), "token", "--sub", "bench",
                                "--scope", SCOPES, "--ttl", "4h"], capture_output=True, text=True,
                               env={**os.environ, "WDT_GATEWAY_JWT_SECRET": SECRET},
                               check=True).stdout.strip()
        # The mixes' clients are eight callers (token subjects), as a fleet of frontends would
        # be: each caller keeps to its share of the ERP quota (vendor.subject_share_percent).
        mix_tokens = mint_tokens(8)

        # The cached answers, and the ceiling that serves the same bytes.
        rest_path = "/v1/stock?" + "&".join(f"spec_no={s}" for s in SPECS)
        body = json.dumps({"query": GRAPHQL, "variables": {"specs": SPECS}}).encode()
        for _ in range(2):
            graphql_answer = get(f"{gateway}/graphql", token, body)
            rest_answer = get(f"{gateway}{rest_path}", token)
        answers = os.path.join(logdir, "answers")
        os.makedirs(answers)
        with open(os.path.join(answers, "graphql.json"), "wb") as f:
            f.write(graphql_answer)
        with open(os.path.join(answers, "rest.json"), "wb") as f:
            f.write(rest_answer)
        ceil_port = free_port()
        ceiling = f"http://127.0.0.1:{ceil_port}"
        servers.start("ceiling", [os.path.join(BIN, "wdt-bench-ceiling"), "--listen",
                                  f"127.0.0.1:{ceil_port}", "--graphql",
                                  os.path.join(answers, "graphql.json"), "--rest",
                                  os.path.join(answers, "rest.json")])
        wait_port(ceil_port)
        assert get(f"{ceiling}{rest_path}", token) == rest_answer
        assert get(f"{ceiling}/graphql", token, body) == graphql_answer
        record["answer_bytes"] = {"graphql": len(graphql_answer), "rest": len(rest_answer)}

        # Cache hits against the ceiling, interleaved.
        lua = os.path.join(ROOT, "bench", "graphql.lua")
        wrk_env = {"WDT_BENCH_TOKEN": token, "WDT_BENCH_BODY": body.decode()}
        rest_lua = os.path.join(ROOT, "bench", "bearer.lua")
        targets = {
            "gateway_graphql": (f"{gateway}/graphql", lua),
            "ceiling_graphql": (f"{ceiling}/graphql", lua),
            "gateway_rest": (f"{gateway}{rest_path}", rest_lua),
            "ceiling_rest": (f"{ceiling}{rest_path}", rest_lua),
        }
        calls_before = vendor_calls(emulator)
        runs = {name: [] for name in targets}
        for r in range(rounds):
            for name, (url, script) in targets.items():
                runs[name].append(wrk(url, seconds, connections, script, wrk_env))
                print(f"round {r + 1}/{rounds} {name}: {runs[name][-1]}", file=sys.stderr)
        hit_calls = vendor_calls(emulator) - calls_before
        hits = {}
        for name, results in runs.items():
            hits[name] = {k: statistics.median(x[k] for x in results)
                          for k in ("rps", "p50_ms", "p99_ms")}
            hits[name]["errors"] = sum(x["errors"] for x in results)
            hits[name]["rounds"] = results
        hits["graphql_vs_ceiling"] = hits["gateway_graphql"]["rps"] / hits["ceiling_graphql"]["rps"]
        hits["rest_vs_ceiling"] = hits["gateway_rest"]["rps"] / hits["ceiling_rest"]["rps"]
        hits["vendor_calls"] = hit_calls
        record["cache_hits"] = hits

        record["miss"] = driver(args, gateway, emulator, token,
                                ["miss", "--n", "30" if smoke else "500"])
        record["stampede"] = driver(args, gateway, emulator, token,
                                    ["stampede", "--n", "100" if smoke else "1000"])

        # Memory: fill the stock cache, then read the resident set.
        entries = 1_000 if smoke else 100_000
        fill = driver(args, gateway, emulator, token, ["fill", "--entries", str(entries)])
        time.sleep(1)
        record["memory"].update({"entries": entries, "fill": fill,
                                 "rss_mib_with_entries": rss_mib(gw.pid)})
        metrics = get(f"{gateway}/metrics").decode()
        m = re.search(r'^wdt_cache_entries\{cache="stock"[^}]*\} (\d+)', metrics, re.M)
        record["memory"]["cached_stock_entries"] = int(m.group(1)) if m else None
        servers.stop(gw)

        # A realistic mix on a fresh gateway with the configured quota and TTL, against an
        # emulator that throttles at the same quota (so going over it would show). The quota
        # is sized for the demand (about 3,100 distinct keys a minute at a 30 s TTL), so the
        # mix shows steady-state freshness; overload is covered by the e2e tests.
        quota = 3600
        ttl = 30
        reset = urllib.request.Request(f"{emulator}/__admin/reset", method="POST",
                                       data=json.dumps({"seed": 42, "skus": 2000}).encode(),
                                       headers={"Content-Type": "application/json"})
        urllib.request.urlopen(reset, timeout=60).read()
        mix_port = free_port()
        mix_gateway = f"http://127.0.0.1:{mix_port}"
        put = urllib.request.Request(f"{emulator}/__admin/faults", method="PUT",
                                     data=json.dumps({"calls_per_minute": quota}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(put, timeout=10).read()
        mix_gw = servers.start("gateway-mix", [os.path.join(BIN, "wdt-gateway")],
                               gateway_env(mix_port, emulator, {
                                   "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": str(quota)}))
        wait_for(f"{mix_gateway}/healthz")
        mix = driver(args, mix_gateway, emulator, mix_tokens, [
            "mix", "--duration", "3" if smoke else "120", "--clients", "16" if smoke else "64",
            "--rate", "10", "--zipf", "1.1", "--take-every", "1" if smoke else "5",
            "--ttl", str(ttl)])
        mix["quota_per_minute"] = quota
        mix["vendor_rate_limited"] = counters(emulator).get(
            "stock_query_detail.php", {}).get("rate_limited", 0)
        record["mix"] = mix
        servers.stop(mix_gw)

        # Two replicas behind one vendor quota, the same mix spread over both: each on its own
        # (every replica misses, spends the quota and keeps stale stock after the other's
        # writes), then sharing Redis; and one replica for reference (the same duration, so the
        # same share of first misses).
        redis_port = free_port()
        servers.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        wait_port(redis_port)
        record["replicas"] = {}
        shared = {"WDT_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/",
                  "WDT_GATEWAY_REPLICAS": "2"}
        for name, count, extra in [("one_replica", 1, {}), ("without_redis", 2, {}),
                                   ("with_redis", 2, shared)]:
            urllib.request.urlopen(reset, timeout=60).read()
            urllib.request.urlopen(put, timeout=10).read()
            replicas = []
            for i in range(count):
                port = free_port()
                replicas.append((servers.start(f"gateway-{name}-{i}", [os.path.join(BIN, "wdt-gateway")],
                                               gateway_env(port, emulator, {
                                                   "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": str(quota),
                                                   **extra})),
                                 f"http://127.0.0.1:{port}"))
            for _, url in replicas:
                wait_for(f"{url}/healthz")
            run = driver(args, ",".join(url for _, url in replicas), emulator, mix_tokens, [
                "mix", "--duration", "3" if smoke else "60", "--clients", "16" if smoke else "64",
                "--rate", "10", "--zipf", "1.1", "--take-every", "1" if smoke else "5",
                "--ttl", str(ttl)])
            run["quota_per_minute"] = quota
            run["vendor_rate_limited"] = counters(emulator).get(
                "stock_query_detail.php", {}).get("rate_limited", 0)
            record["replicas"][name] = run
            for proc, _ in replicas:
                servers.stop(proc)

        record["tenants"] = tenants_scenario(servers, smoke, seconds, rounds, connections, logdir)
        record["feed"] = feed_scenario(servers, smoke)
    except _Done:
        pass
    finally:
        servers.stop_all()

    out = args.out or os.path.join(
        ROOT, "bench", "results",
        f"{record['date'][:19].replace(':', '')}-{record['mode']}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(out)


if __name__ == "__main__":
    main()
