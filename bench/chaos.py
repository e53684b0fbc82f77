#!/usr/bin/env python3
"""The fault matrix and the soak: the real gateway (two replicas), the emulator and a real Redis
on loopback, steady mixed load (REST and GraphQL reads, stock takes and sync acknowledgements with
Idempotency-Keys, GraphQL subscriptions, a webhook endpoint), and one fault at a time.

Every answer is checked against the emulator's own ledger of the writes it took
(`GET /__admin/ledger`): a read whose value the ERP never held is a wrong answer; one the ERP
held but had already replaced is stale (with its age); a write the client was told succeeded
that is not in the ledger is lost; a write in the ledger twice is a duplicate (the ERP cannot
deduplicate, so the gateway must). Webhook deliveries are verified with the Standard Webhooks
reference library (PyPI `standardwebhooks`) and their rows checked the same way; so are the
subscriptions' events.

    bench/chaos.sh matrix [--only erp_5xx,redis_kill] [--fault-secs 30]
    bench/chaos.sh soak --minutes 30
    bench/chaos.sh smoke                # CI: one minute, faults cycling

Writes bench/results/<date>-chaos-<mode>.json and prints the table of docs/RELIABILITY.md.
"""

import argparse
import asyncio
import itertools
import datetime
import decimal
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks.webhooks import Webhook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
WAREHOUSE = "WH-SH01"
TENANT = "acme"
HOT = [f"G{i:05}-01" for i in range(1, 21)]
# Written quantities start here: far above the seeded ones, so each names one write.
FIRST_VALUE = 500_000
SCOPES = ("stock:read stock:write stock-sync:read stock-sync:write webhooks:read "
          "webhooks:write")
# Codes a fault may cause; anything else (or any error without a fault) is unexpected.
EXPECTED = {"VENDOR_UNAVAILABLE", "VENDOR_RATE_LIMITED", "WRITE_OUTCOME_UNKNOWN",
            "IDEMPOTENCY_UNAVAILABLE", "IDEMPOTENCY_KEY_IN_USE", "STORE_UNAVAILABLE",
            "transport"}
RETRY = {"VENDOR_UNAVAILABLE", "VENDOR_RATE_LIMITED", "IDEMPOTENCY_UNAVAILABLE",
         "IDEMPOTENCY_KEY_IN_USE", "STORE_UNAVAILABLE", "RATE_LIMITED", "transport"}


def now_ms():
    return int(time.time() * 1000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qty(v):
    try:
        return Decimal(str(v)) if v is not None else None
    except decimal.InvalidOperation:
        return "unreadable"


CHILDREN = []


def _reap(*_):
    """Stops every child (they run in sessions of their own), then exits."""
    for child in CHILDREN:
        if child.p and child.p.poll() is None:
            os.kill(child.p.pid, signal.SIGCONT)
            child.p.kill()
    sys.exit(1)


class Proc:
    """A child process with its log, and the figures the soak samples."""

    def __init__(self, name, argv, env, logdir):
        self.name, self.argv, self.env = name, argv, env
        self.log = open(os.path.join(logdir, f"{name}.log"), "ab")
        self.p = None
        CHILDREN.append(self)
        self.start()

    def start(self):
        # The rig's settings only: a WDT_* variable of the caller's shell (CI exports a JWT
        # secret) must not reach the children.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WDT_")}
        self.p = subprocess.Popen(self.argv, env={**inherited, **self.env}, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def signal(self, sig):
        if self.p and self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        if self.p:
            self.p.wait()

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stats(self):
        """Resident KiB, open files, threads."""
        try:
            with open(f"/proc/{self.p.pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            rss = int(fields["VmRSS"].split()[0])
            threads = int(fields["Threads"])
            fds = len(os.listdir(f"/proc/{self.p.pid}/fd"))
            return {"rss_kib": rss, "threads": threads, "fds": fds}
        except (OSError, KeyError, ValueError):
            return None


class Rig:
    """Redis, the emulator, the JWKS and webhook receiver (this process) and two replicas."""

    def __init__(self, workdir, replicas=2):
        self.dir = workdir
        self.redis_port = free_port()
        self.emu_port = free_port()
        self.aux_port = free_port()
        self.ports = [free_port() for _ in range(replicas)]
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "chaos-1"
        self.jwks_mode = "ok"
        self.hook_mode = "ok"
        self.extra_keys = {}
        self.redis = None
        self.emulator = None
        self.replicas = []
        self.tenants_file = os.path.join(workdir, "tenants.toml")
        self.config = os.path.join(workdir, "gateway.toml")

    # -- processes -------------------------------------------------------------------------
    def start_redis(self):
        self.redis = Proc("redis", ["redis-server", "--port", str(self.redis_port), "--save", "",
                                    "--appendonly", "no", "--bind", "127.0.0.1"], {}, self.dir)

    def tenants_text(self):
        e = f"http://127.0.0.1:{self.emu_port}"
        return (f'[tenants.{TENANT}]\nflagship_url = "{e}/openapi"\nenterprise_url = "{e}/openapi2/"\n'
                'sid = "wdtapi3"\nappkey = "wdt_test"\nappsecret = "testsecret:testsalt"\n'
                'enterprise_sid = "test2"\nenterprise_appkey = "test2-xx"\n'
                'enterprise_appsecret = "12345"\n')

    def start(self):
        self.start_redis()
        self.emulator = Proc("emulator", [os.path.join(BIN, "wdt-emulator"), "--listen",
                                          f"127.0.0.1:{self.emu_port}", "--skus", "400"], {},
                             self.dir)
        with open(self.tenants_file, "w") as f:
            f.write(self.tenants_text())
        with open(self.config, "w") as f:
            f.write(f'tenants_file = "{self.tenants_file}"\n'
                    # The ERP asks for 5 to 10 minutes of quiet after a rate-limit message
                    # (throttle_pause_secs, 300 by default); 20 s keeps the matrix short.
                    "[vendor]\nthrottle_pause_secs = 20\n"
                    # Outlasts two receiver faults in a row (the soak cycles them back to back) but
                    # not the default's hours: 96 s of waits.
                    "[webhooks]\ntimeout_secs = 3\nretry_schedule_secs = [1, 2, 3, 5, 5, 10, 10, 15, 15, 30]\n")
        for i, port in enumerate(self.ports):
            state = os.path.join(self.dir, f"state-{i}")
            os.makedirs(state, exist_ok=True)
            env = {
                "WDT_GATEWAY_LISTEN": f"127.0.0.1:{port}",
                "WDT_GATEWAY_CONFIG": self.config,
                "WDT_GATEWAY_JWKS_URL": f"http://127.0.0.1:{self.aux_port}/jwks.json",
                "WDT_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
                "WDT_GATEWAY_REPLICAS": str(len(self.ports)),
                "WDT_GATEWAY_CHANGE_FEED_INTERVAL": "2",
                "WDT_GATEWAY_STATE_DIR": state,
                "WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                "WDT_GATEWAY_CLIENT_RATE_LIMIT": "0",
                # The ERP's quota for this account (the emulator enforces none of its own unless
                # a fault says so): the mix stays well inside it.
                "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE": "600",
                "WDT_GATEWAY_LOG": "warn",
            }
            self.replicas.append(Proc(f"gateway-{i}", [os.path.join(BIN, "wdt-gateway")], env,
                                      self.dir))

    def stop(self):
        for p in self.replicas + [self.emulator, self.redis]:
            if p:
                p.signal(signal.SIGCONT)
                p.kill()

    def base(self, i):
        return f"http://127.0.0.1:{self.ports[i]}"

    @property
    def emu(self):
        return f"http://127.0.0.1:{self.emu_port}"

    # -- tokens and the identity provider --------------------------------------------------
    def token(self, sub="chaos", kid=None, key=None):
        claims = {"sub": sub, "scope": SCOPES, "tenant": TENANT,
                  "exp": int(time.time()) + 6 * 3600}
        return jwt.encode(claims, key or self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid})

    def jwks(self):
        keys = [(self.kid, self.key)] + list(self.extra_keys.items())
        out = []
        for kid, key in keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
            out.append(jwk)
        return {"keys": out}


class Book:
    """Everything the clients saw, for the checks."""

    def __init__(self):
        self.requests = []   # (t_ms, kind, status, code)
        self.reads = []      # (t_start_ms, t_end_ms, kind, sku, value, marked_stale)
        self.writes = {}     # id -> dict
        self.acks = {}       # id -> dict
        self.events = []     # (t_ms, source, sku, value)
        self.hook_ids = {}   # webhook-id -> body
        self.hook_bad = 0    # deliveries the reference library refused
        self.closes = []     # (t_ms, replica, close code)
        self.reconnects = 0  # requests sent again to the next replica (refused / closed)
        self.transport = {}  # transport failures by exception
        self.hook_epoch_ms = 0  # when the webhook endpoint was last registered

    def answer(self, kind, status, code):
        self.requests.append((now_ms(), kind, status, code))


class Load:
    """The steady mix; replicas are picked round robin and a refused connection goes to the
    next one, as a Service does once a pod stops listening."""

    def __init__(self, rig, book, run_id, readers=4, writers=1):
        self.rig, self.book, self.run_id = rig, book, run_id
        self.readers, self.writers = readers, writers
        self.stop = asyncio.Event()
        self.seq = 0
        self.rr = 0
        # One token subject per role, as separate frontends and partners would be: each has
        # its fair share of the ERP quota.
        self.tokens = {role: rig.token(sub=f"chaos-{role}")
                       for role in ("reader", "writer", "acker", "subscriber")}
        self.token = self.tokens["subscriber"]
        self.session = None

    def next_base(self):
        self.rr += 1
        return self.rig.base(self.rr % len(self.rig.ports))

    async def call(self, method, path, kind, body=None, key=None, timeout=30, role="reader"):
        """One request; returns (status, code, json) with status 0 for a transport failure.
        A refused connection is tried on the next replica at once."""
        headers = {"authorization": f"Bearer {self.tokens[role]}"}
        if key:
            headers["idempotency-key"] = key
        for _ in range(len(self.rig.ports)):
            url = self.next_base() + path
            try:
                async with self.session.request(method, url, json=body, headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    text = await r.text()
                    try:
                        doc = json.loads(text) if text else {}
                    except ValueError:
                        doc = {"_text": text[:200]}
                    code = None
                    if r.status >= 400:
                        code = doc.get("code") if isinstance(doc, dict) else None
                        if code is None and isinstance(doc, dict) and doc.get("errors"):
                            code = doc["errors"][0].get("extensions", {}).get("code")
                    elif isinstance(doc, dict) and doc.get("errors"):
                        code = doc["errors"][0].get("extensions", {}).get("code")
                    self.book.answer(kind, r.status, code)
                    return r.status, code, doc, r.headers
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError):
                # Refused, or a kept-alive connection the replica closed as it stopped: any
                # HTTP client retries that once elsewhere (every request here is safe to
                # repeat: reads, and writes with their Idempotency-Key).
                self.book.reconnects += 1
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                self.book.answer(kind, 0, "transport")
                self.book.transport[type(e).__name__] = self.book.transport.get(type(e).__name__, 0) + 1
                return 0, "transport", {}, {}
        self.book.answer(kind, 0, "transport")
        return 0, "transport", {}, {}

    async def reader(self, n):
        rng = random.Random(n)
        while not self.stop.is_set():
            sku = rng.choice(HOT)
            t0 = now_ms()
            if n % 2:
                status, code, doc, headers = await self.call("GET", f"/v1/stock?spec_no={sku}", "rest_read")
                rows = doc.get("items", []) if status == 200 else None
                stale = "stale" in headers.get("cache-status", "") if status == 200 else False
                on_hand = "on_hand"
            else:
                q = ("query($s:[String!]!){ stock(specNos:$s){ specNo warehouseNo onHand } }")
                status, code, doc, _ = await self.call("POST", "/graphql", "graphql_read",
                                                       {"query": q, "variables": {"s": [sku]}})
                rows = (doc.get("data") or {}).get("stock") if status == 200 and not code else None
                stale = bool((doc.get("extensions") or {}).get("stale")) if rows is not None else False
                rows = [{"spec_no": r.get("specNo"), "warehouse_no": r.get("warehouseNo"),
                         "on_hand": r.get("onHand")} for r in rows or []] if rows is not None else None
                on_hand = "on_hand"
            if rows is not None:
                mine = [r for r in rows if r.get("warehouse_no") == WAREHOUSE and r.get("spec_no") == sku]
                value = qty(mine[0][on_hand]) if mine else None
                self.book.reads.append((t0, now_ms(), "rest" if n % 2 else "graphql", sku, value, stale))
            await asyncio.sleep(0.05)

    async def writer(self, n):
        rng = random.Random(100 + n)
        while not self.stop.is_set():
            self.seq += 1
            wid = f"{self.run_id}-w{self.seq}"
            sku = rng.choice(HOT)
            value = FIRST_VALUE + self.seq
            body = {"warehouse_no": WAREHOUSE, "mode": "all", "remark": wid,
                    "lines": [{"spec_no": sku, "quantity": str(value)}]}
            record = {"sku": sku, "value": value, "t0": now_ms(), "answers": []}
            self.book.writes[wid] = record
            record["final"] = await self.until_final("POST", "/v1/stock-takes", "stock_take", body, wid,
                                                     record, ok=201)
            record["t1"] = now_ms()
            await asyncio.sleep(0.7)

    async def until_final(self, method, path, kind, body, key, record, ok):
        """Sends a keyed write until it has a final answer: its success, a refusal, or
        WRITE_OUTCOME_UNKNOWN; gives up after 120 s (then `gave_up`)."""
        give_up = time.monotonic() + 120
        while True:
            status, code, doc, headers = await self.call(method, path, kind, body, key=key,
                                                         role="writer" if kind == "stock_take" else "acker")
            record["answers"].append(status if not code else f"{status} {code}")
            if status == ok:
                return "ok"
            if code == "WRITE_OUTCOME_UNKNOWN":
                return "unknown"
            if code not in RETRY and status not in (0, 500, 502, 503, 504):
                return f"refused {status} {code}"
            if time.monotonic() > give_up:
                return "gave_up"
            try:
                wait = float(headers.get("retry-after", "0.5"))
            except (TypeError, ValueError):
                wait = 0.5
            await asyncio.sleep(min(max(wait, 0.2), 5))

    async def acker(self):
        """Sync acknowledgements (`fail`, so the listing stays queued), each with its own key and
        message."""
        n = 0
        while not self.stop.is_set():
            status, _, doc, _ = await self.call("GET", "/v1/stock-sync/pending?limit=10", "pending",
                                                role="acker")
            ids = doc.get("api_goods_ids", []) if status == 200 else []
            for listing in ids[:2]:
                status, _, plan, _ = await self.call("GET", f"/v1/stock-sync/plans/{listing}", "plan",
                                                     role="acker")
                if status != 200:
                    continue
                n += 1
                aid = f"{self.run_id}-a{n}"
                body = {"stock_change_count": plan["stock_change_count"],
                        "quantity": str(plan["quantity_to_sync"]), "message": aid}
                record = {"listing": listing, "t0": now_ms(), "answers": []}
                self.book.acks[aid] = record
                record["final"] = await self.until_final(
                    "POST", f"/v1/stock-sync/plans/{listing}/fail", "ack", body, aid, record, ok=200)
            await asyncio.sleep(2)

    async def subscriber(self, i):
        q = ("subscription($s:[String!]!){ stockChanged(specNos:$s, warehouseNo:\"%s\")"
             "{ specNo warehouseNo onHand } }" % WAREHOUSE)
        while not self.stop.is_set():
            try:
                async with self.session.ws_connect(self.rig.base(i).replace("http", "ws") + "/graphql",
                                                   protocols=["graphql-transport-ws"], heartbeat=None) as ws:
                    await ws.send_json({"type": "connection_init",
                                        "payload": {"Authorization": f"Bearer {self.token}"}})
                    await ws.send_json({"id": "1", "type": "subscribe",
                                        "payload": {"query": q, "variables": {"s": HOT}}})
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        m = json.loads(msg.data)
                        if m.get("type") == "next":
                            r = ((m.get("payload") or {}).get("data") or {}).get("stockChanged")
                            if r:
                                self.book.events.append((now_ms(), "subscription", r["specNo"],
                                                         qty(r["onHand"])))
                        elif m.get("type") == "ping":
                            await ws.send_json({"type": "pong"})
                    self.book.closes.append((now_ms(), i, ws.close_code))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                self.book.closes.append((now_ms(), i, "connect failed"))
            await asyncio.sleep(1)

    def tasks(self):
        out = [self.reader(n) for n in range(self.readers)]
        out += [self.writer(n) for n in range(self.writers)]
        out += [self.acker()]
        out += [self.subscriber(i) for i in range(len(self.rig.ports))]
        return out


class Aux:
    """The identity provider's JWKS and the webhook receiver, served by this process."""

    def __init__(self, rig, book):
        self.rig, self.book = rig, book
        self.secret = None

    async def jwks(self, request):
        if self.rig.jwks_mode == "down":
            return web.Response(status=503, text="down")
        if self.rig.jwks_mode == "slow":
            await asyncio.sleep(10)
        return web.json_response(self.rig.jwks())

    async def hook(self, request):
        body = await request.read()
        mode = self.rig.hook_mode
        if mode == "hang":
            await asyncio.sleep(60)
        if mode == "slow":
            await asyncio.sleep(2)
        if mode == "500":
            return web.Response(status=500)
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.book.hook_bad += 1
            return web.Response(status=400)
        mid = request.headers.get("webhook-id")
        seen = self.book.hook_ids.get(mid)
        if seen is not None and seen != body:
            self.book.hook_bad += 1
        self.book.hook_ids[mid] = body
        doc = json.loads(body)
        if doc.get("type") == "stock.changed":
            for row in doc["data"]["stock_levels"]:
                if row.get("warehouse_no") == WAREHOUSE and row.get("spec_no") in HOT:
                    self.book.events.append((now_ms(), "webhook", row["spec_no"], qty(row.get("on_hand"))))
        return web.Response(status=204)

    async def start(self):
        app = web.Application()
        app.router.add_get("/jwks.json", self.jwks)
        app.router.add_post("/hook", self.hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.rig.aux_port).start()
        return runner


# -- faults ----------------------------------------------------------------------------------

async def put_faults(session, rig, faults):
    async with session.put(f"{rig.emu}/__admin/faults", json=faults) as r:
        if r.status != 200:
            raise RuntimeError(f"faults refused: {await r.text()}")


def erp(faults):
    async def inject(ctx):
        await put_faults(ctx.session, ctx.rig, faults)

    async def clear(ctx):
        await put_faults(ctx.session, ctx.rig, {})
    return inject, clear


def redis_signal(sig, restart=False, gap=0):
    async def inject(ctx):
        if sig == signal.SIGSTOP:
            ctx.rig.redis.signal(signal.SIGSTOP)
        else:
            ctx.rig.redis.kill()
            if restart:
                await asyncio.sleep(gap)
                ctx.rig.redis.start()

    async def clear(ctx):
        if sig == signal.SIGSTOP:
            ctx.rig.redis.signal(signal.SIGCONT)
        elif not ctx.rig.redis.alive():
            ctx.rig.redis.start()
    return inject, clear


def replica_kill(i, during):
    """SIGKILL a replica while writes wait for the ERP's answer (`writes`) or while webhook
    deliveries hang at the receiver (`webhooks`); it comes back after the fault."""
    async def inject(ctx):
        if during == "writes":
            await put_faults(ctx.session, ctx.rig, {"answer_delay_ms": 1500})
        else:
            ctx.rig.hook_mode = "slow"
        await asyncio.sleep(4)
        ctx.rig.replicas[i].kill()

    async def clear(ctx):
        await put_faults(ctx.session, ctx.rig, {})
        ctx.rig.hook_mode = "ok"
        ctx.rig.replicas[i].start()
    return inject, clear


async def rolling_restart(ctx):
    """SIGTERM each replica in turn; each must exit 0 (in-flight requests finished) before it
    is started again and serves."""
    for proc in ctx.rig.replicas:
        proc.signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.p.wait)
        ctx.notes.append(f"{proc.name} exited {code} after SIGTERM")
        if code != 0:
            ctx.unexpected.append(f"{proc.name} exited {code} after SIGTERM")
        proc.start()
        await wait_ready(ctx.session, ctx.rig.base(ctx.rig.replicas.index(proc)), 60)


async def no_clear(ctx):
    return None


def jwks(mode):
    async def inject(ctx):
        ctx.rig.jwks_mode = mode
        # A token signed with a key the gateways have not seen: its verification needs the JWKS.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = f"rotated-{int(time.time())}"
        ctx.rig.extra_keys[kid] = key
        token = ctx.rig.token(kid=kid, key=key)
        ctx.probe_token = token
        status = await probe_read(ctx, token)
        ctx.notes.append(f"a token of a new key during jwks {mode}: {status}")

    async def clear(ctx):
        ctx.rig.jwks_mode = "ok"
    return inject, clear


async def probe_read(ctx, token):
    try:
        async with ctx.session.get(ctx.rig.base(0) + f"/v1/stock?spec_no={HOT[0]}",
                                   headers={"authorization": f"Bearer {token}"},
                                   timeout=aiohttp.ClientTimeout(total=20)) as r:
            return r.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return 0


def broken_tenants():
    async def inject(ctx):
        with open(ctx.rig.tenants_file, "w") as f:
            f.write("[tenants.acme\nflagship_url = ")
        for p in ctx.rig.replicas:
            p.signal(signal.SIGHUP)

    async def clear(ctx):
        with open(ctx.rig.tenants_file, "w") as f:
            f.write(ctx.rig.tenants_text())
        for p in ctx.rig.replicas:
            p.signal(signal.SIGHUP)
    return inject, clear


def receiver(mode):
    async def inject(ctx):
        ctx.rig.hook_mode = mode

    async def clear(ctx):
        ctx.rig.hook_mode = "ok"
    return inject, clear


FAULTS = {
    "erp_rate_limit_minute": ("ERP: 频率 rate-limit messages (20 calls a minute per method)",
                              *erp({"calls_per_minute": 20})),
    "erp_rate_limit_concurrency": ("ERP: 并发 rate-limit messages (1 call at a time per method)",
                                   *erp({"max_concurrent": 1, "latency_min_ms": 200,
                                         "latency_max_ms": 400})),
    "erp_5xx": ("ERP: half the calls answered HTTP 500/502", *erp({"http_error_rate": 0.5})),
    "erp_truncated": ("ERP: 30 % of answers truncated after taking effect",
                      *erp({"malformed_rate": 0.3, "malformed_kind": "truncated"})),
    "erp_html": ("ERP: 30 % of answers an HTML error page after taking effect",
                 *erp({"malformed_rate": 0.3, "malformed_kind": "html"})),
    "erp_reset": ("ERP: 30 % of connections cut without an answer after taking effect",
                  *erp({"malformed_rate": 0.3, "malformed_kind": "reset"})),
    "erp_latency": ("ERP: latency 2 to 10 s on every call", *erp({"latency_min_ms": 2000,
                                                                 "latency_max_ms": 10000})),
    "erp_clock_ahead": ("ERP: clock 10 minutes ahead", *erp({"clock_skew_secs": 600})),
    "erp_clock_behind": ("ERP: clock 10 minutes behind", *erp({"clock_skew_secs": -600})),
    "erp_outage": ("ERP: full outage (every call HTTP 5xx) for a minute, then back",
                   *erp({"http_error_rate": 1.0})),
    "redis_kill": ("Redis: SIGKILL, down 20 s, restarted empty", *redis_signal(signal.SIGKILL)),
    "redis_hang": ("Redis: SIGSTOP (hung), then SIGCONT", *redis_signal(signal.SIGSTOP)),
    "redis_restart_empty": ("Redis: SIGKILL and restarted empty at once",
                            *redis_signal(signal.SIGKILL, restart=True, gap=0.2)),
    "replica_kill_writes": ("Replica 0: SIGKILL while stock takes wait for the ERP's answer",
                            *replica_kill(0, "writes")),
    "replica_kill_webhooks": ("Replica 1: SIGKILL while webhook deliveries are in flight",
                              *replica_kill(1, "webhooks")),
    "rolling_restart": ("Both replicas: SIGTERM, wait for exit, start, in turn, under load",
                        rolling_restart, no_clear),
    "jwks_down": ("JWKS endpoint answers 503", *jwks("down")),
    "jwks_slow": ("JWKS endpoint answers after 10 s", *jwks("slow")),
    "tenants_broken": ("Tenants file replaced by broken TOML and SIGHUP", *broken_tenants()),
    "receiver_hang": ("Webhook receiver hangs (60 s, beyond the 3 s timeout)", *receiver("hang")),
    "receiver_500": ("Webhook receiver answers 500", *receiver("500")),
    "receiver_slow": ("Webhook receiver answers after 2 s", *receiver("slow")),
}
# Faults that restart a replica or empty Redis: in the matrix, not in the soak, whose figures
# are per process lifetime.
RESTARTS = {"replica_kill_writes", "replica_kill_webhooks", "rolling_restart", "redis_kill",
            "redis_restart_empty"}
# How long a fault lasts when not --fault-secs (the outage is a minute, as the issue says).
DURATION = {"erp_outage": 60, "redis_kill": 20, "rolling_restart": 0}


class Ctx:
    def __init__(self, rig, session):
        self.rig, self.session = rig, session
        self.notes, self.unexpected = [], []
        self.probe_token = None


async def wait_ready(session, base, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    return True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.25)
    return False


async def readyz(session, rig):
    out = []
    for i in range(len(rig.ports)):
        try:
            async with session.get(rig.base(i) + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                doc = json.loads(await r.text() or "{}")
                tenant = (doc.get("tenants") or {}).get(TENANT, {})
                out.append(f"{r.status} {doc.get('status') or doc.get('code')}"
                           f"{' erp ' + doc['erp'] if doc.get('erp') else ''}"
                           f"{' redis ' + doc['redis'] if doc.get('redis') else ''}"
                           f" feed {((tenant.get('change_feed') or {}).get('state'))}")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            out.append("no answer")
    return out


# The gauges the chart's alert rules fire on (helm/…/prometheusrule.yaml), and the value that
# makes each condition true; the rules add a `for:` duration before they fire.
ALERT_CONDITIONS = {
    "wdt_tenant_vendor_up": ("0", "WdtGatewayTenantVendorDown"),
    "wdt_vendor_circuit_open": ("1", "WdtGatewayCircuitOpen"),
    "wdt_redis_up": ("0", "WdtGatewayRedisUnavailable"),
    "wdt_change_feed_up": ("0", "WdtGatewayChangeFeedDown"),
    "wdt_tenants_file_ok": ("0", "WdtGatewayTenantsFileRefused"),
}


async def alerts(session, rig):
    """The alert conditions that hold on some replica now (its `/metrics`)."""
    seen = set()
    for i in range(len(rig.ports)):
        try:
            async with session.get(rig.base(i) + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                for line in (await r.text()).splitlines():
                    name = line.split("{")[0].split(" ")[0]
                    if name in ALERT_CONDITIONS:
                        value, alert = ALERT_CONDITIONS[name]
                        if line.split()[-1] in (value, value + ".0"):
                            seen.add(alert)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            seen.add(f"WdtGatewayDown (replica {i})")
    return sorted(seen)


async def recovered(ctx, cold):
    """Recovery: every replica's /readyz says `ready` (not `degraded`: ERP and Redis up, no
    breaker open) and answers a read that must reach the ERP (a SKU nobody read before)."""
    headers = {"authorization": f"Bearer {ctx.rig.token()}"}
    for i in range(len(ctx.rig.ports)):
        try:
            async with ctx.session.get(ctx.rig.base(i) + "/readyz",
                                       timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status != 200 or (await r.json()).get("status") != "ready":
                    return False
            async with ctx.session.get(ctx.rig.base(i) + f"/v1/stock?spec_no={next(cold)}",
                                       headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status != 200:
                    return False
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return False
    return True


async def run(args):
    run_id = f"c{int(time.time())}"
    workdir = tempfile.mkdtemp(prefix="wdt-chaos-")
    rig = Rig(workdir)
    book = Book()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        aux = Aux(rig, book)
        runner = await aux.start()
        rig.start()
        try:
            for i in range(len(rig.ports)):
                if not await wait_ready(session, rig.base(i), 120):
                    raise RuntimeError(f"replica {i} did not become ready; see {workdir}")
            ctx = Ctx(rig, session)
            initial = {}
            for sku in HOT:
                async with session.get(f"{rig.emu}/__admin/stock/{sku}") as r:
                    view = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"the emulator has no {sku}: {view}")
                row = next((row for row in view.get("rows", [])
                            if row.get("warehouse_no") == WAREHOUSE), {})
                # On hand is good + defective stock; the takes count the good stock only.
                initial[sku] = (qty(row.get("stock_num")), qty(row.get("defect") or 0))
            token = rig.token()

            async def register():
                async with session.post(rig.base(0) + "/v1/webhook-endpoints",
                                        json={"url": f"http://127.0.0.1:{rig.aux_port}/hook",
                                              "events": ["stock.changed"]},
                                        headers={"authorization": f"Bearer {token}"}) as r:
                    made = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"webhook endpoint refused: {made}")
                    aux.secret = made["secret"]
                    book.hook_epoch_ms = now_ms()
                    return made

            created = await register()
            load = Load(rig, book, run_id)
            load.session = session
            workers = [asyncio.create_task(t) for t in load.tasks()]
            sampler = asyncio.create_task(sample(rig, args.sample_secs, book))
            rows = []
            cold = (f"COLD-{n}" for n in itertools.count())
            started = time.time()
            await asyncio.sleep(args.warmup)
            names = [n for n in FAULTS if not args.only or n in args.only]
            if args.mode == "soak" and not args.only:
                names = [n for n in names if n not in RESTARTS]
            plan = names if args.mode == "matrix" else None
            deadline = started + args.minutes * 60 if args.mode != "matrix" else None
            k = 0
            while True:
                if plan is not None:
                    if k >= len(plan):
                        break
                    name = plan[k]
                else:
                    if time.time() >= deadline:
                        break
                    name = names[k % len(names)]
                k += 1
                label, inject, clear = FAULTS[name]
                secs = DURATION.get(name, args.fault_secs) if args.mode == "matrix" else min(
                    DURATION.get(name, args.fault_secs), args.fault_secs)
                row = {"fault": name, "what": label, "start_ms": now_ms()}
                ctx.notes, ctx.unexpected = [], []
                await inject(ctx)
                await asyncio.sleep(min(5, secs))
                row["readyz_during"] = await readyz(session, rig)
                row["alerts_during"] = await alerts(session, rig)
                await asyncio.sleep(max(0, secs - 5))
                await clear(ctx)
                row["cleared_ms"] = now_ms()
                t0 = time.monotonic()
                while not await recovered(ctx, cold):
                    if time.monotonic() - t0 > 180:
                        row["recovery_secs"] = None
                        break
                    await asyncio.sleep(0.25)
                else:
                    row["recovery_secs"] = round(time.monotonic() - t0, 2)
                if ctx.probe_token:
                    t1 = time.monotonic()
                    while await probe_read(ctx, ctx.probe_token) != 200 and time.monotonic() - t1 < 60:
                        await asyncio.sleep(1)
                    row.setdefault("notes", []).append(f"the new key's token accepted {time.monotonic() - t1:.1f} s after the JWKS recovered")
                    ctx.probe_token = None
                async with session.get(rig.base(0) + "/v1/webhook-endpoints",
                                       headers={"authorization": f"Bearer {token}"}) as r:
                    listed = await r.json() if r.status == 200 else {}
                if not any(e.get("id") == created["id"] for e in listed.get("endpoints", listed.get("items", []))):
                    # Redis restarted empty took the registration with it (see OPERATIONS.md,
                    # Redis persistence): the partner registers again.
                    created = await register()
                    row.setdefault("notes", []).append(
                        "the webhook endpoint was gone with Redis' data and was registered again")
                row["readyz_after"] = await readyz(session, rig)
                row["notes"] = list(ctx.notes) + row.get("notes", [])
                row["unexpected_events"] = list(ctx.unexpected)
                await asyncio.sleep(args.settle)
                row["end_ms"] = now_ms()
                rows.append(row)
                print(f"{name}: recovered in {row['recovery_secs']} s; readyz during {row['readyz_during']}",
                      file=sys.stderr)
            load.stop.set()
            await asyncio.sleep(0.1)
            # Let the last writes finish, then the feed and the webhooks drain.
            await asyncio.wait(workers, timeout=150)
            for w in workers:
                w.cancel()
            await asyncio.sleep(args.drain)
            # A delivery still waiting for its next attempt (after a receiver fault) is not lost:
            # wait for the schedule to end it, delivered or failed.
            t0 = time.monotonic()
            while await pending_deliveries(session, rig, created["id"], token) and time.monotonic() - t0 < 150:
                await asyncio.sleep(1)
            sampler.cancel()
            ledger = await read_ledger(session, rig)
            final = {}
            for sku in HOT:
                async with session.get(f"{rig.emu}/__admin/stock/{sku}") as r:
                    view = await r.json()
                final[sku] = next((qty(row.get("stock_num")) for row in view.get("rows", [])
                                   if row.get("warehouse_no") == WAREHOUSE), None)
            async with session.get(rig.base(0) + f"/v1/webhook-endpoints/{created['id']}/deliveries?limit=200",
                                   headers={"authorization": f"Bearer {token}"}) as r:
                log = await r.json()
            deliveries = {}
            for d in log.get("deliveries", log.get("items", [])) if isinstance(log, dict) else []:
                deliveries[d.get("state")] = deliveries.get(d.get("state"), 0) + 1
            redis_mem = redis_memory(rig)
            redis_end = redis_breakdown(rig)
            sampled = idempotency_records(rig)[1]
            cost = idempotency_cost(rig)
            # What one record costs Redis in all (its key, value and Redis' own bookkeeping),
            # measured by deleting them at the end; MEMORY USAGE's mean if that failed.
            IDEMPOTENCY_RECORD.append(cost["per_record"] if cost else sampled)
            result = check(book, ledger, initial, final, rows, run_id)
            result["webhooks"]["delivery_log"] = deliveries or log
            commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            result.update({"mode": args.mode, "workdir": workdir, "samples": book_samples(book),
                           "commit": commit,
                           "redis_used_memory_end": redis_mem,
                           "redis_breakdown_end": redis_end,
                           "idempotency_records_cost": dict(cost or {}, memory_usage_mean=sampled),
                           "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
                           "seconds": round(time.time() - started)})
            return result
        finally:
            rig.stop()
            await runner.cleanup()


SAMPLES = []
IDEMPOTENCY_RECORD = []


def book_samples(book):
    return SAMPLES


def redis_memory(rig):
    try:
        out = subprocess.run(["redis-cli", "-p", str(rig.redis_port), "info", "memory"],
                             capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return None


def redis_cli(rig, *args):
    try:
        return subprocess.run(["redis-cli", "-p", str(rig.redis_port), *args], capture_output=True,
                              text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def idempotency_records(rig):
    """The idempotency records (kept 24 h by design, so they grow through any run shorter than
    that): their number, and their mean size from a sample of 200."""
    keys = redis_cli(rig, "--scan", "--pattern", "*:i:*").split()
    sizes = []
    for key in keys[:200]:
        try:
            sizes.append(int(redis_cli(rig, "memory", "usage", key).strip()))
        except ValueError:
            pass
    return len(keys), (sum(sizes) / len(sizes) if sizes else 0)


def redis_breakdown(rig):
    """Redis' memory by kind of key (`wdt:v1:{namespace}:<kind>:…`; webhook and feed keys by their
    second part too): {kind: [keys, bytes]} from MEMORY USAGE of every key, plus what
    `INFO memory` says besides the keys (scripts, clients, overhead)."""
    keys = redis_cli(rig, "--scan").split()
    groups = {}
    if keys:
        try:
            # One line per key: empty for a key that expired since the scan.
            sizes = subprocess.run(["redis-cli", "-p", str(rig.redis_port)],
                                   input="".join(f"MEMORY USAGE {k}\n" for k in keys),
                                   capture_output=True, text=True, timeout=30).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            sizes = []
        for key, size in zip(keys, sizes):
            # After the tenant's `{namespace}` (a hash tag, which may hold colons).
            parts = key.split("}:", 1)[-1].split(":")
            kind = parts[0]
            if kind in ("wh", "feed") and len(parts) > 1:
                kind += ":" + parts[1]
            group = groups.setdefault(kind, [0, 0])
            group[0] += 1
            group[1] += int(size) if size.strip().isdigit() else 0
    info = {}
    for line in redis_cli(rig, "info", "memory").splitlines():
        name, _, value = line.strip().partition(":")
        if name in ("used_memory", "used_memory_dataset", "used_memory_overhead",
                    "used_memory_scripts", "mem_clients_normal", "used_memory_vm_eval"):
            info[name] = int(value) if value.isdigit() else value
    return {"kinds": groups, "info": info}


def idempotency_cost(rig):
    """At the end of a run: used_memory before and after deleting every idempotency record."""
    keys = redis_cli(rig, "--scan", "--pattern", "*:i:*").split()
    before = redis_memory(rig)
    if not keys or before is None:
        return None
    try:
        subprocess.run(["redis-cli", "-p", str(rig.redis_port)], input="".join(f"DEL {k}\n" for k in keys),
                       capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    after = redis_memory(rig)
    if after is None:
        return None
    return {"records": len(keys), "bytes": before - after, "per_record": (before - after) / len(keys)}


async def sample(rig, every, book):
    loop = asyncio.get_running_loop()
    # Redis by kind of key once a minute (it reads every key's size).
    each = max(1, round(60 / every))
    n = 0
    while True:
        s = {"t_ms": now_ms(), "redis_used_memory": await loop.run_in_executor(None, redis_memory, rig),
             "redis_idempotency_records": (await loop.run_in_executor(None, idempotency_records, rig))[0]}
        if n % each == 0:
            s["redis_breakdown"] = await loop.run_in_executor(None, redis_breakdown, rig)
        n += 1
        for i, p in enumerate(rig.replicas):
            s[f"replica{i}"] = p.stats() if p.alive() else None
            s[f"replica{i}_pid"] = p.p.pid if p.p else None
        s["tasks"] = await tasks_of(rig)
        SAMPLES.append(s)
        await asyncio.sleep(every)


async def tasks_of(rig):
    """Tokio's alive tasks per replica, from /metrics when the runtime exports them."""
    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(len(rig.ports)):
            value = None
            try:
                async with session.get(rig.base(i) + "/metrics", timeout=aiohttp.ClientTimeout(total=3)) as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("wdt_runtime_alive_tasks"):
                            value = float(line.split()[-1])
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            out.append(value)
    return out


async def pending_deliveries(session, rig, endpoint, token):
    """How many of the endpoint's latest deliveries still wait for an attempt."""
    async with session.get(rig.base(0) + f"/v1/webhook-endpoints/{endpoint}/deliveries?limit=200",
                           headers={"authorization": f"Bearer {token}"}) as r:
        log = await r.json() if r.status == 200 else {}
    return sum(d.get("state") == "pending" for d in log.get("deliveries", []))


async def read_ledger(session, rig):
    out, after = [], 0
    while True:
        async with session.get(f"{rig.emu}/__admin/ledger?after={after}&limit=10000") as r:
            doc = await r.json()
        out += doc["writes"]
        if not doc["writes"]:
            return out
        after = doc["next"]


def check(book, ledger, initial, final, rows, run_id):
    """Compares what the clients saw with the ledger, per fault window."""
    history = {sku: [(-1, initial[sku][0])] for sku in HOT}
    defect = {sku: initial[sku][1] for sku in HOT}
    takes, acks = {}, {}
    for w in ledger:
        if w["kind"] == "stock_take":
            takes[w["remark"]] = takes.get(w["remark"], 0) + 1
            for line in w["lines"]:
                if line["spec_no"] in history and w["warehouse_no"] == WAREHOUSE and not line["defect"]:
                    history[line["spec_no"]].append(
                        (w["at_ms"], qty(line["new_num"]) + defect[line["spec_no"]]))
        elif w["kind"] in ("sync_fail", "sync_success"):
            acks[w["message"]] = acks.get(w["message"], 0) + 1

    def judge(sku, value, t):
        """(wrong, stale age ms or None)."""
        h = history[sku]
        values = [v for _, v in h]
        if value not in values:
            return True, None
        current = max(i for i, (at, _) in enumerate(h) if at <= t)
        last = max(i for i, v in enumerate(values) if v == value)
        if last >= current:
            return False, None
        return False, t - h[last + 1][0]

    examples = []

    def example(what):
        if len(examples) < 10:
            examples.append(what)

    def window(row, t):
        return row["start_ms"] <= t < row["end_ms"]

    def summarize(select):
        out = {"requests": 0, "statuses": {}, "unexpected": 0, "wrong": 0, "stale": 0,
               "stale_max_ms": 0, "stale_marked": 0, "lost_writes": 0, "duplicate_writes": 0,
               "writes": 0, "writes_unknown": 0, "writes_gave_up": 0, "acks": 0,
               "lost_acks": 0, "duplicate_acks": 0, "events": 0, "wrong_events": 0}
        for t, kind, status, code in book.requests:
            if select(t):
                out["requests"] += 1
                key = f"{status} {code}" if code else str(status)
                out["statuses"][key] = out["statuses"].get(key, 0) + 1
                if status >= 500 and code not in EXPECTED or status == 0 and code != "transport":
                    out["unexpected"] += 1
                if 400 <= status < 500 and code not in ("IDEMPOTENCY_KEY_IN_USE", "RATE_LIMITED"):
                    out["unexpected"] += 1
                if status == 200 and code and code not in EXPECTED:
                    out["unexpected"] += 1
        for t0, t1, kind, sku, value, marked in book.reads:
            if select(t0):
                wrong, age = judge(sku, value, t0)
                out["wrong"] += wrong
                if wrong:
                    example({"read": kind, "sku": sku, "value": str(value), "t_ms": t0,
                             "history": [(at, str(v)) for at, v in history[sku]][-5:],
                             "written_as": [w for w in ledger if w["kind"] == "stock_take" and any(
                                 qty(l["new_num"]) + defect[sku] == value for l in w["lines"])][:2]})
                if age is not None and age > 0:
                    out["stale"] += 1
                    out["stale_max_ms"] = max(out["stale_max_ms"], age)
                out["stale_marked"] += bool(marked)
        for wid, w in book.writes.items():
            if select(w["t0"]) and "final" in w:
                out["writes"] += 1
                n = takes.get(wid, 0)
                out["lost_writes"] += w["final"] == "ok" and n == 0
                out["duplicate_writes"] += n > 1
                out["writes_unknown"] += w["final"] == "unknown"
                out["writes_gave_up"] += w["final"] == "gave_up"
                if w["final"].startswith("refused") and n > 0:
                    out["wrong"] += 1
        for aid, a in book.acks.items():
            if select(a["t0"]) and "final" in a:
                out["acks"] += 1
                n = acks.get(aid, 0)
                if a["final"].startswith("refused") and n > 0:
                    out["wrong"] += 1
                out["lost_acks"] += a["final"] == "ok" and n == 0
                out["duplicate_acks"] += n > 1
        for t, source, sku, value in book.events:
            if select(t):
                out["events"] += 1
                wrong, _ = judge(sku, value, t)
                out["wrong_events"] += wrong
                if wrong:
                    example({"event": source, "sku": sku, "value": str(value), "t_ms": t,
                             "history": [(at, str(v)) for at, v in history[sku]][-5:]})
        return out

    for row in rows:
        row.update(summarize(lambda t, row=row: window(row, t)))
    first = rows[0]["start_ms"] if rows else now_ms()
    baseline = summarize(lambda t: t < first)
    total = summarize(lambda t: True)
    # Nothing lost at the end: every hot SKU's last webhook row is the ERP's final value.
    delivered = {}
    for t, source, sku, value in book.events:
        if source == "webhook":
            delivered.setdefault(sku, set()).add(value)
    # Values are unique per write, so a receiver keeping the latest `modified_at` ends on the
    # final one if it was delivered at all.
    last_write = {}
    for sku in HOT:
        for at, v in history[sku]:
            if v == final[sku]:
                last_write[sku] = at
    stale_webhooks = sorted(sku for sku in HOT if final[sku] != initial[sku][0]
                            and last_write.get(sku, 0) >= book.hook_epoch_ms
                            and final[sku] not in delivered.get(sku, set()))
    dup_ids = 0
    return {"faults": rows, "baseline": baseline, "total": total, "wrong_examples": examples,
            "webhooks": {"messages": len(book.hook_ids), "refused_by_verifier": book.hook_bad,
                         "skus_whose_last_delivery_is_not_final": stale_webhooks,
                         "same_id_different_body": dup_ids},
            "subscription_closes": [c for _, _, c in book.closes][:50],
            "reconnects": book.reconnects, "transport_failures": book.transport,
            "ledger_writes": len(ledger)}


def table(result):
    lines = ["| fault | requests | answers by status | unexpected | wrong | stale (max age) | "
             "writes: lost / duplicate / unknown | acks: lost / duplicate | events (wrong) | "
             "recovery | /readyz during | alerts |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [{"fault": "baseline (no fault)", **result["baseline"]}] + result["faults"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        lines.append(
            f"| {r['fault']} | {r['requests']} | {statuses} | {r['unexpected']} | {r['wrong']} | "
            f"{r['stale']} ({r['stale_max_ms'] / 1000:.1f} s) | {r['lost_writes']} / "
            f"{r['duplicate_writes']} / {r['writes_unknown']} of {r['writes']} | {r['lost_acks']} / "
            f"{r['duplicate_acks']} of {r['acks']} | {r['events']} ({r['wrong_events']}) | "
            f"{r.get('recovery_secs', '—')} s | {'; '.join(r.get('readyz_during', [])) or '—'} | "
            f"{', '.join(r.get('alerts_during', [])) or '—'} |")
    return "\n".join(lines)


def soak_table(result):
    """The soak's figures: totals, and growth after warm-up per process."""
    t = result["total"]
    lines = [f"{result['seconds'] // 60} min, {t['requests']} requests, {len(result['faults'])} faults "
             f"injected; unexpected answers {t['unexpected']}, wrong {t['wrong']}, lost / duplicate "
             f"writes {t['lost_writes']} / {t['duplicate_writes']} of {t['writes']}, lost / duplicate "
             f"acknowledgements {t['lost_acks']} / {t['duplicate_acks']} of {t['acks']}, events "
             f"{t['events']} ({t['wrong_events']} wrong), webhook messages "
             f"{result['webhooks']['messages']} (refused by the verifier: "
             f"{result['webhooks']['refused_by_verifier']}).", "",
             f"Growth from the first sample after {result['flat'].get('warmup_minutes', '?')} min of warm-up "
             "to the last; trend: the least-squares slope over the same span, per 30 minutes.", "",
             "| series | after warm-up | at the end | growth | trend per 30 min |", "|---|---|---|---|---|"]
    for key, series in result["flat"].items():
        if key == "redis_used_memory":
            lines.append(f"| Redis used_memory | {series['first']:,} B | {series['last']:,} B | "
                         f"{series['growth_percent']} % | — |")
            if "without_idempotency_records" in series:
                a, b = series["without_idempotency_records"]
                lines.append(f"| the same without the idempotency records ({series['idempotency_records'][0]} → "
                             f"{series['idempotency_records'][1]}, {series['bytes_per_idempotency_record']} B "
                             f"each, kept 24 h by design) | {a:,} B | {b:,} B | "
                             f"{series['without_idempotency_records_growth_percent']} % | "
                             f"{series.get('without_idempotency_records_trend_percent_per_30_min')} % |")
            continue
        if key not in ("replica0", "replica1"):
            continue
        for metric, v in series.items():
            lines.append(f"| {key} {metric} | {v['first']:,} | {v['last']:,} | {v['growth_percent']} % | "
                         f"{v.get('trend_percent_per_30_min')} % |")
    samples = result.get("samples", [])
    since = samples[0]["t_ms"] + result["flat"].get("warmup_minutes", 0) * 60_000 if samples else 0
    tasks = [(s["t_ms"], s["tasks"]) for s in samples
             if s["t_ms"] >= since and s.get("tasks") and None not in s["tasks"]]
    if tasks:
        for i in range(len(tasks[0][1])):
            a, b = tasks[0][1][i], tasks[-1][1][i]
            lines.append(f"| replica{i} tokio tasks | {a:.0f} | {b:.0f} | {growth(a, b)} % | "
                         f"{trend([(t, v[i]) for t, v in tasks])} % |")
    kinds = result["flat"].get("redis_by_kind", {}).get("kinds", {})
    if kinds:
        lines += ["", "| Redis keys by kind | keys after warm-up → at the end | bytes after warm-up → at the end |",
                  "|---|---|---|"]
        for kind, v in sorted(kinds.items(), key=lambda kv: -kv[1]["bytes"][1]):
            lines.append(f"| `{kind}` | {v['keys'][0]:,} → {v['keys'][1]:,} | {v['bytes'][0]:,} → {v['bytes'][1]:,} |")
    return "\n".join(lines)


def trend(points):
    """Least-squares slope of (t_ms, value) points, as a percentage of the first value per 30
    minutes: a leak keeps climbing, a plateau's slope is near 0 whatever its bumps."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if not den:
        return None
    slope = sum((t - mt) * (v - mv) for t, v in points) / den
    return round(100 * slope * 1_800_000 / max(points[0][1], 1), 1)


def growth(first, last):
    return round(100 * (last - first) / max(first, 1), 1)


def flat(samples, warmup_ms):
    """Growth of each replica's RSS, fds and threads, and of Redis memory (with and without
    the idempotency records, kept 24 h by design), from the first sample after warm-up to the
    last (per process lifetime: a restarted replica starts anew), and each series' trend over
    that span (`trend`)."""
    out = {}
    if not samples:
        return out
    t_first = samples[0]["t_ms"] + warmup_ms
    out["warmup_minutes"] = round(warmup_ms / 60_000, 1)
    for key in ("replica0", "replica1"):
        by_pid = {}
        for s in samples:
            if s["t_ms"] >= t_first and s.get(key):
                by_pid.setdefault(s[f"{key}_pid"], []).append((s["t_ms"], s[key]))
        if not by_pid:
            continue
        longest = max(by_pid.values(), key=len)
        (_, first), (_, last) = longest[0], longest[-1]
        out[key] = {m: {"first": first[m], "last": last[m], "growth_percent": growth(first[m], last[m]),
                        "peak": max(v[m] for _, v in longest),
                        "trend_percent_per_30_min": trend([(t, v[m]) for t, v in longest])}
                    for m in ("rss_kib", "fds", "threads")}
    kept = [s for s in samples if s["t_ms"] >= t_first and s["redis_used_memory"]]
    if kept:
        a, b = kept[0], kept[-1]
        record = IDEMPOTENCY_RECORD[0] if IDEMPOTENCY_RECORD else 0

        def net(s):
            return round(s["redis_used_memory"] - s["redis_idempotency_records"] * record)
        out["redis_used_memory"] = {
            "first": a["redis_used_memory"], "last": b["redis_used_memory"],
            "growth_percent": growth(a["redis_used_memory"], b["redis_used_memory"]),
            "idempotency_records": [a["redis_idempotency_records"], b["redis_idempotency_records"]],
            "bytes_per_idempotency_record": round(record),
            "without_idempotency_records": [net(a), net(b)],
            "without_idempotency_records_growth_percent": growth(net(a), net(b)),
            "without_idempotency_records_trend_percent_per_30_min": trend([(s["t_ms"], net(s)) for s in kept])}
    broken = [s for s in samples if s["t_ms"] >= t_first and s.get("redis_breakdown", {}).get("kinds")]
    if broken:
        a, b = broken[0]["redis_breakdown"], broken[-1]["redis_breakdown"]
        kinds = sorted(set(a["kinds"]) | set(b["kinds"]))
        out["redis_by_kind"] = {
            "first_t_ms": broken[0]["t_ms"], "last_t_ms": broken[-1]["t_ms"],
            "kinds": {k: {"keys": [a["kinds"].get(k, [0, 0])[0], b["kinds"].get(k, [0, 0])[0]],
                          "bytes": [a["kinds"].get(k, [0, 0])[1], b["kinds"].get(k, [0, 0])[1]]}
                      for k in kinds},
            "info": [a["info"], b["info"]]}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["matrix", "soak", "smoke", "report"])
    parser.add_argument("record", nargs="?", help="report: the JSON record to print as tables")
    parser.add_argument("--only", type=lambda s: s.split(","), default=None)
    parser.add_argument("--fault-secs", type=float, default=30)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--settle", type=float, default=5)
    parser.add_argument("--drain", type=float, default=20)
    parser.add_argument("--sample-secs", type=float, default=5)
    # The soak's warm-up: what is bounded fills first (each webhook endpoint's log of its last
    # 200 messages takes about 12 minutes at this mix's rate, the caches less).
    parser.add_argument("--flat-after", type=float, default=12,
                        help="soak: minutes of warm-up before growth is measured")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.mode == "report":
        with open(args.record) as f:
            result = json.load(f)
        print(table(result) if result["mode"] == "matrix" else soak_table(result))
        return
    signal.signal(signal.SIGTERM, _reap)
    signal.signal(signal.SIGINT, _reap)
    if args.mode == "smoke":
        args.minutes, args.fault_secs, args.warmup, args.settle, args.drain = 1, 8, 5, 2, 40
        args.only = args.only or ["erp_5xx", "erp_reset", "redis_hang", "replica_kill_writes",
                                  "receiver_500"]
    result = asyncio.run(run(args))
    result["flat"] = flat(SAMPLES, round(args.flat_after * 60_000) if args.mode == "soak" else 0)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    out = args.out or os.path.join(ROOT, "bench", "results", f"{stamp}-chaos-{args.mode}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(table(result))
    print(json.dumps({"webhooks": result["webhooks"], "flat": result["flat"],
                      "total": {k: result["total"][k] for k in ("requests", "unexpected", "wrong",
                                                                "lost_writes", "duplicate_writes",
                                                                "lost_acks", "duplicate_acks",
                                                                "wrong_events")}}, indent=1))
    print(out)
    t = result["total"]
    bad = (t["wrong"] + t["lost_writes"] + t["duplicate_writes"] + t["lost_acks"] +
           t["duplicate_acks"] + t["wrong_events"] + result["webhooks"]["refused_by_verifier"] +
           len(result["webhooks"]["skus_whose_last_delivery_is_not_final"]) + result["baseline"]["unexpected"])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
