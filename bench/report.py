#!/usr/bin/env python3
"""Prints the tables of docs/PERFORMANCE.md from a benchmark record (bench/results/*.json),
each target with the number that meets it or misses it."""

import json
import os
import sys


def fmt(x, digits=2):
    return f"{x:,.{digits}f}" if isinstance(x, (int, float)) else str(x)


def check(ok):
    if ok is None:
        return "not measured"
    return "met" if ok else "**missed**"


BEGIN = "<!-- bench/report.py: begin -->"
END = "<!-- bench/report.py: end -->"


def main():
    args = sys.argv[1:]
    doc = None
    if len(args) >= 3 and args[0] == "--doc":
        doc, args = args[1], args[2:]
    if len(args) not in (1, 2, 3):
        raise SystemExit("usage: report.py [--doc docs/PERFORMANCE.md] bench/results/<record>.json "
                         "[bench/results/<tenants-record>.json] [bench/results/<feed-record>.json]")
    global TENANTS, FEED
    # A second or third record contributes the scenario it was run for (bench.py --only).
    for extra in args[1:]:
        if "feed" in json.load(open(extra)):
            FEED = extra
        else:
            TENANTS = extra
    args = args[:1]
    if doc:
        import contextlib
        import io
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            tables(args[0])
        text = open(doc).read()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        rel = os.path.relpath(args[0], os.path.dirname(os.path.abspath(doc)))
        source = f"\n_From [`{os.path.basename(args[0])}`]({rel})"
        if TENANTS:
            trel = os.path.relpath(TENANTS, os.path.dirname(os.path.abspath(doc)))
            source += (f"; the many-tenants scenario from [`{os.path.basename(TENANTS)}`]({trel}) "
                       "(`bench.py --only tenants`)")
        if FEED:
            frel = os.path.relpath(FEED, os.path.dirname(os.path.abspath(doc)))
            source += (f"; the change-feed scenario from [`{os.path.basename(FEED)}`]({frel}) "
                       "(`bench.py --only feed`)")
        text = (text[:start] + source + "._\n\n"
                + out.getvalue() + "\n" + text[end:])
        with open(doc, "w") as f:
            f.write(text)
        print(f"updated {doc}")
    else:
        tables(args[0])


def paired(tn):
    """The median of each round's many-tenants/one-tenant ratio (the two runs of a round share
    the machine's state); records before it was kept: the ratio of the medians."""
    return tn.get("many_vs_one_paired", tn["many_vs_one"])


def tenant_targets(tn):
    """The targets of the many-tenants scenario: (name, measured, met)."""
    one, many = tn["one_tenant"], tn["many_tenants"]
    return [
        (f"cache-hit cost over {tn['tenants']:,} tenants within 5 % of one tenant's "
         "(median of the rounds' ratios)",
         f"{paired(tn) * 100:.1f} % of the one-tenant requests/s (ratio of the medians "
         f"{tn['many_vs_one'] * 100:.1f} %)",
         paired(tn) >= 0.95),
        ("≤ 64 KiB per idle tenant", f"{tn['idle_kib_per_tenant']:.1f} KiB",
         tn["idle_kib_per_tenant"] <= 64),
        ("tenants: zero errors, no ERP call during the hit runs",
         f"{one['errors'] + many['errors']} errors, {tn['vendor_calls_during_hits']:.0f} calls",
         one["errors"] + many["errors"] == 0 and tn["vendor_calls_during_hits"] == 0),
    ]


def print_targets(rows):
    print("### Targets\n")
    print("| target | measured | |")
    print("|---|---|---|")
    for name, value, ok in rows:
        print(f"| {name} | {value} | {check(ok)} |")


def print_tenants(tn):
    print("\n### Many tenants\n")
    print(f"Cache hits (`GET /v1/stock`, one SKU) spread over {tn['tenants']:,} tenants "
          f"(Zipf s = 1.1 over tenants and over 50 SKUs of each; {tn['requests_in_rotation']:,} "
          "requests in rotation), against the same stream for one tenant: each distinct "
          "(tenant, SKU) of it mapped to a SKU of its own, so both serve the same number of keys "
          "with the same frequencies. Every key was read twice before and stock is kept an hour, "
          "so every timed request is a cache hit. Each tenant is its own emulator account.\n")
    print("| | tenants | distinct keys | requests/s | p50 ms | p99 ms | errors | idle RSS MiB | "
          "RSS after warming MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, label in [("one_tenant", "one tenant"), ("many_tenants", "many tenants")]:
        x = tn[name]
        print(f"| {label} | {x['tenants']:,} | {x['distinct_keys']:,} | {fmt(x['rps'], 0)} | "
              f"{fmt(x['p50_ms'], 3)} | {fmt(x['p99_ms'], 3)} | {x['errors']} | "
              f"{fmt(x['idle_rss_mib'], 1)} | {fmt(x['warm_rss_mib'], 1)} |")
    print(f"\nIdle memory per tenant: {tn['idle_kib_per_tenant']:.1f} KiB ((idle RSS with "
          f"{tn['tenants']:,} tenants − idle RSS with one) / {tn['tenants'] - 1:,}).")


def feed_targets(fd):
    """The targets of the change-feed scenario: (name, measured, met)."""
    off, on = fd["ttl_only"], fd["feed_on"]
    ratio = fd.get("erp_calls_ratio")
    limit = fd["interval_s"] + 2
    rows = [
        ("change feed: ≥ 5× fewer ERP calls than TTL-only (realistic mix, steady state)",
         f"{fmt(on['erp_calls_per_1000'], 1)} against {fmt(off['erp_calls_per_1000'], 1)} per "
         f"1,000 requests ({'∞' if ratio is None else fmt(ratio, 1)}×)",
         ratio is None or ratio >= 5),
        (f"change feed: answer age p99 ≤ interval + 2 s ({limit} s)",
         f"{fmt(on['age_p99_s'], 0)} s (max {fmt(on['age_max_s'], 0)} s)",
         on["age_p99_s"] <= limit),
    ]
    sub = on.get("subscriptions") or {}
    if "skipped" in sub:
        rows.append(("change feed: every change reaches the subscribers",
                     "no subscription endpoint", None))
    elif sub:
        d, t = sub["direct"], sub["takes"]
        rows.append(("change feed: every change reaches the subscribers",
                     f"direct {d['seen']}/{d['made']}, stock takes {t['seen']}/{t['made']}",
                     d["seen"] == d["made"] and t["seen"] == t["made"]))
    hooks = on.get("webhooks") or {}
    if hooks:
        d, t = hooks["direct"], hooks["takes"]
        rows.append(("webhooks: every change reaches a webhook receiver",
                     f"direct {d['seen']}/{d['made']}, stock takes {t['seen']}/{t['made']} "
                     f"(change → receiver p99 {fmt(d['p99_ms'], 0)} ms)",
                     d["seen"] == d["made"] and t["seen"] == t["made"]))
    return rows


def print_feed(fd):
    off, on = fd["ttl_only"], fd["feed_on"]
    print("\n### Live stock: change feed vs TTL\n")
    print(f"The realistic mix twice on fresh gateways: the change feed off (stock judged by its "
          f"{fd['ttl_s']} s TTL) and on (a poll every {fd['interval_s']} s; fed stock kept "
          f"{fd['fed_ttl_s']} s while the feed reports). Meanwhile the ERP changes by itself: a "
          f"direct stock change every {fd['direct_every_s']} s through the emulator's admin route "
          "(Zipf over the 100 most read SKUs), besides the mix's stock takes through the gateway. "
          f"{fd['warmup_s']} s of warm-up, then {fd['measured_s']} s measured; ERP calls are every "
          "call the emulator counted in the measured phase (the feed's polls included). "
          "Subscribers: `stockChanged` over graphql-transport-ws, one on the changed SKUs and one "
          "on every SKU; latency runs from a change's answer to its event.\n")
    print("| | requests | errors | ERP calls | per 1,000 requests | vs TTL only | "
          "age p50 / p99 / max s | stale answers | direct changes made / seen | "
          "change → subscriber p50 / p99 / max ms | stock takes made / seen | "
          "take → subscriber p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---|")
    for x, label in [(off, "TTL only (feed off)"),
                     (on, f"change feed ({fd['interval_s']} s)")]:
        ratio = off["erp_calls_per_1000"] / x["erp_calls_per_1000"] \
            if x["erp_calls_per_1000"] else float("inf")
        sub = x.get("subscriptions") or {}
        made = x.get("direct_changes", {}).get("made", 0)
        if "direct" in sub:
            d, t = sub["direct"], sub["takes"]
            seen = f"{made} / {d['seen']}"
            lat = f"{fmt(d['p50_ms'], 0)} / {fmt(d['p99_ms'], 0)} / {fmt(d['max_ms'], 0)}"
            takes = f"{t['made']} / {t['seen']}"
            tlat = f"{fmt(t['p50_ms'], 0)} / {fmt(t['p99_ms'], 0)}"
        else:
            note = "skipped" if "skipped" in sub else "—"
            seen, lat, takes, tlat = f"{made} / {note}", note, f"{x['stock_takes']} / {note}", note
        print(f"| {label} | {x['requests']:,} | {x['errors']} | {x['erp_calls']:,} | "
              f"{fmt(x['erp_calls_per_1000'], 1)} | {fmt(ratio, 1)}× | "
              f"{fmt(x['age_p50_s'], 0)} / {fmt(x['age_p99_s'], 0)} / {fmt(x['age_max_s'], 0)} | "
              f"{x['stale_answers']} | {seen} | {lat} | {takes} | {tlat} |")
    print()
    for x, label in [(off, "TTL only"), (on, "change feed")]:
        methods = ", ".join(f"`{m}` {n:,}" for m, n in x["erp_calls_by_method"].items())
        print(f"- ERP calls by method, {label}: {methods or 'none'}.")
    sub = on.get("subscriptions") or {}
    if "skipped" in sub:
        print(f"\nLatency not measured: {sub['skipped']}.")
    hooks = on.get("webhooks") or {}
    if hooks:
        d, t = hooks["direct"], hooks["takes"]
        print(f"\nWebhooks, with the feed on: a `stock.changed` endpoint on a receiver on the same "
              f"machine got {hooks['rows']:,} rows; direct changes {d['made']} made, {d['seen']} "
              f"received, change → receiver p50 / p99 / max {fmt(d['p50_ms'], 0)} / "
              f"{fmt(d['p99_ms'], 0)} / {fmt(d['max_ms'], 0)} ms; stock takes {t['made']} made, "
              f"{t['seen']} received, p50 / p99 {fmt(t['p50_ms'], 0)} / {fmt(t['p99_ms'], 0)} ms.")
    fm = on.get("feed_metrics") or {}
    if fm:
        polls = ", ".join(f"{k[6:]} {v:,.0f}" for k, v in sorted(fm.items()) if k.startswith("polls_"))
        print(f"\nThe feed over the whole run (warm-up included): polls {polls or 'none'}; "
              f"{fm.get('erp_calls', 0):,.0f} ERP calls, {fm.get('rows', 0):,.0f} rows, "
              f"{fm.get('plans', 0):,.0f} plans.")


TENANTS = None
FEED = None


def tables(path):
    r = json.load(open(path))
    if TENANTS:
        r["tenants"] = json.load(open(TENANTS))["tenants"]
    if FEED:
        r["feed"] = json.load(open(FEED))["feed"]
    m = r["machine"]
    s = r["settings"]
    print(f"Recorded {r['date']} ({r['mode']} run) at commit `{m['commit']}` on {m['cpu']} "
          f"({m['cpus']} CPUs, {m['memory']}), Linux {m['kernel']}, {m['rustc']}, {m['wrk']}. "
          f"Servers on CPU {s['server_cpu']}, load generator on CPU {s['load_cpu']}; "
          f"{s['rounds']} interleaved rounds of {s['seconds']} s at {s['connections']} connections, "
          f"medians.\n")

    tn = r.get("tenants")
    fd = r.get("feed")
    if "cache_hits" not in r:
        # A run of one scenario alone (bench.py --only tenants or --only feed).
        print_targets((tenant_targets(tn) if tn else []) + (feed_targets(fd) if fd else []))
        if tn:
            print_tenants(tn)
        if fd:
            print_feed(fd)
        return
    h = r["cache_hits"]
    print("### Cache hits against the ceiling\n")
    print("| target | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for name in ("gateway_graphql", "ceiling_graphql", "gateway_rest", "ceiling_rest"):
        t = h[name]
        print(f"| {name.replace('_', ' ')} | {fmt(t['rps'], 0)} | {fmt(t['p50_ms'], 3)} | "
              f"{fmt(t['p99_ms'], 3)} | {t['errors']} |")
    print(f"\nVendor calls during the hit runs: {h['vendor_calls']}.\n")

    mi, st, me, mx = r["miss"], r["stampede"], r["memory"], r["mix"]
    errors = sum(h[n]["errors"] for n in ("gateway_graphql", "gateway_rest"))
    worst_p99 = max(h["gateway_graphql"]["p99_ms"], h["gateway_rest"]["p99_ms"])
    rows = [
        ("cache-hit GraphQL ≥ 35 % of the ceiling (aim 50 %)",
         f"{h['graphql_vs_ceiling'] * 100:.1f} %", h["graphql_vs_ceiling"] >= 0.35),
        ("cache-hit REST ≥ 60 % of the ceiling (aim 75 %)",
         f"{h['rest_vs_ceiling'] * 100:.1f} %", h["rest_vs_ceiling"] >= 0.60),
        ("p99 ≤ 5 ms at 32 connections", f"{worst_p99:.2f} ms", worst_p99 <= 5.0),
        ("zero errors", f"{errors}", errors == 0),
        ("stampede: exactly 1 vendor call",
         f"{st['vendor_calls']} call for {st['requests']} requests ({st['errors']} errors)",
         st["vendor_calls"] == 1 and st["errors"] == 0),
        ("mix: ≤ 1 vendor call per key per TTL window (+ writes)",
         f"{mx['vendor_calls']} calls ≤ bound {mx['call_bound']}",
         mx["vendor_calls"] <= mx["call_bound"]),
        ("mix: never above the vendor quota",
         f"max {mx['max_vendor_calls_in_any_minute']} in any minute, quota "
         f"{mx['quota_per_minute']}; vendor throttled {mx['vendor_rate_limited']}×",
         mx["max_vendor_calls_in_any_minute"] <= mx["quota_per_minute"]
         and mx["vendor_rate_limited"] == 0),
        ("RSS ≤ 64 MiB idle", f"{me['idle_rss_mib']:.1f} MiB", me["idle_rss_mib"] <= 64),
        (f"RSS ≤ 150 MiB with {me['entries']:,} cached entries",
         f"{me['rss_mib_with_entries']:.1f} MiB ({me['cached_stock_entries']} entries)",
         me["rss_mib_with_entries"] <= 150),
        ("miss path adds ≤ 1 ms at p50 over a direct call",
         f"{mi['added_p50_ms']:.3f} ms ({mi['gateway_p50_ms']:.3f} vs {mi['direct_p50_ms']:.3f})",
         mi["added_p50_ms"] <= 1.0),
    ]
    if tn:
        rows += tenant_targets(tn)
    if fd:
        rows += feed_targets(fd)
    print_targets(rows)

    print("\n### Realistic mix\n")
    print("| clients | requests | req/s | errors | p50 ms | p99 ms | vendor calls | per 1,000 "
          "requests | stale answers | age p50 / p99 / max s | stock takes | fresh read after take |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    print(f"| {mx['clients']} | {mx['requests']:,} | {fmt(mx['rps'], 0)} | {mx['errors']} | "
          f"{fmt(mx['p50_ms'], 3)} | {fmt(mx['p99_ms'], 3)} | {mx['vendor_calls']} | "
          f"{fmt(mx['vendor_calls_per_1000'], 1)} | {mx['stale_answers']} | "
          f"{fmt(mx['age_p50_s'], 0)} / {fmt(mx['age_p99_s'], 0)} / {fmt(mx['age_max_s'], 0)} | "
          f"{mx['stock_takes']} | {mx['fresh_reads_after_take']}/{mx['stock_takes']} |")
    print(f"\nZipf s = {mx['zipf']} over {mx['specs']:,} SKUs, TTL {mx['ttl_s']} s, "
          f"{mx['duration_s']:.0f} s.")
    rp = r.get("replicas")
    if rp:
        print("\n### Two replicas, one vendor quota\n")
        print("The same mix (60 s) against one emulator that throttles at the account's quota, "
              "spread over two gateway processes; a stock take's check read goes to the other "
              "replica.\n")
        print("| | requests | errors | vendor calls | per 1,000 requests | most in any minute "
              "(quota) | throttled by the ERP | fresh read after take (on the other replica) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, label in [("one_replica", "one replica (reference)"),
                            ("without_redis", "two replicas, each on its own"),
                            ("with_redis", "two replicas sharing Redis")]:
            x = rp.get(name)
            if x is None:
                continue
            print(f"| {label} | {x['requests']:,} | {x['errors']} | {x['vendor_calls']:,} | "
                  f"{fmt(x['vendor_calls_per_1000'], 1)} | {x['max_vendor_calls_in_any_minute']:,} "
                  f"({x['quota_per_minute']:,}) | {x['vendor_rate_limited']:,} | "
                  f"{x['fresh_reads_after_take']}/{x['stock_takes']} |")
    if fd:
        print_feed(fd)
    if tn:
        print_tenants(tn)
    print("\n### Miss path, stampede, memory\n")
    print(f"- Miss: gateway p50 {mi['gateway_p50_ms']:.3f} ms / p99 {mi['gateway_p99_ms']:.3f} ms; "
          f"direct signed call p50 {mi['direct_p50_ms']:.3f} ms / p99 {mi['direct_p99_ms']:.3f} ms "
          f"({mi['requests']} each, interleaved).")
    print(f"- Stampede: {st['requests']} concurrent identical misses with the vendor answering in "
          f"{st['vendor_latency_ms']} ms: {st['vendor_calls']} vendor call, {st['ok']} answers, "
          f"{st['elapsed_ms']:.0f} ms in all.")
    print(f"- Memory: {me['idle_rss_mib']:.1f} MiB idle; {me['rss_mib_with_entries']:.1f} MiB after "
          f"caching {me['entries']:,} SKUs ({me['fill']['vendor_calls']:,} vendor calls, "
          f"{me['fill']['secs']:.1f} s).")


if __name__ == "__main__":
    main()
