//! `wdt-bench-driver`: the benchmark scenarios that need more than `wrk`. Each prints one JSON
//! object on stdout; `bench/bench.py` runs them and records the results.
//!
//! - `miss`: the gateway's added latency on a cache miss over a direct signed call of the same
//!   vendor request;
//! - `stampede`: N concurrent identical misses, and how many vendor calls they made;
//! - `mix`: Zipf-distributed reads from many clients with a stock take every few seconds;
//!   optionally after a warm-up that is not counted, with direct stock changes in the ERP (the
//!   emulator's admin route) and with GraphQL subscribers (`stockChanged` over
//!   graphql-transport-ws) that time each change's event;
//! - `fill`: fills the stock cache with N entries (for the memory scenario).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::{FutureExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use wdt_client::enterprise::StockQueryDetail;
use wdt_client::{EnterpriseCredentials, SecretString, WdtClient};

#[derive(Debug, Parser)]
struct Args {
    /// The gateway's base URL; several, separated by commas, are replicas the requests are
    /// spread over in turn (a stock take's check read goes to the next replica).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    gateway: Vec<String>,
    /// The emulator's base URL (its admin API and its enterprise endpoint).
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    emulator: String,
    /// A bearer token with every scope; several, separated by commas, are callers (token
    /// subjects) the mix's clients take in turn, as a fleet of frontends would.
    #[arg(long, env = "WDT_BENCH_TOKEN", value_delimiter = ',', required = true)]
    token: Vec<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Added latency of a cache miss: the gateway vs a direct signed call, interleaved.
    Miss {
        /// Requests of each kind.
        #[arg(long, default_value_t = 300)]
        n: usize,
    },
    /// N concurrent identical misses of one spec.
    Stampede {
        /// Concurrent requests.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// How long the vendor takes to answer meanwhile (so that all requests are misses).
        #[arg(long, default_value_t = 300)]
        vendor_latency_ms: u64,
    },
    /// Zipf reads from many clients, a stock take every few seconds; optionally a warm-up,
    /// direct stock changes in the ERP and GraphQL subscribers that time their events.
    Mix(MixArgs),
    /// Fills the stock cache with `entries` specs (100 per request).
    Fill {
        /// Entries to cache.
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
    },
}

/// The `mix` scenario's settings.
#[derive(Debug, clap::Args)]
struct MixArgs {
    /// Seconds to run (measured; after the warm-up).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds of warm-up before the measured phase: its reads, ERP calls and changes are not
    /// counted.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests per second of each client.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Zipf exponent over the emulator's SKUs (in their order).
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// Seconds between stock takes.
    #[arg(long, default_value_t = 5.0)]
    take_every: f64,
    /// The gateway's stock TTL, seconds (for the bound of vendor calls).
    #[arg(long, default_value_t = 30)]
    ttl: u64,
    /// Seconds between direct stock changes in the ERP (the emulator's `POST
    /// /__admin/stock/{spec_no}`, as a person in the ERP's UI would make them); 0: none.
    #[arg(long, default_value_t = 0.0)]
    direct_every: f64,
    /// Direct changes draw their SKU from this many of the most popular ones (Zipf over them).
    #[arg(long, default_value_t = 100)]
    direct_skus: usize,
    /// Seconds before a row (SKU x warehouse) changed by a take or a direct change is changed
    /// again: two changes of a row within one feed interval may arrive as one event.
    #[arg(long, default_value_t = 0.0)]
    change_gap: f64,
    /// Subscribe to `stockChanged` over WebSocket (graphql-transport-ws on the first gateway's
    /// `/graphql`) and time each change's event; skipped with a note when there is no
    /// subscription endpoint.
    #[arg(long)]
    subscribe: bool,
    /// Seconds to wait after the measured phase for the events of its last changes.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Register a webhook endpoint for `stock.changed` on the first gateway (its token needs
    /// `webhooks:write` and `stock:read`; the gateway must allow private networks) and time
    /// each change's message, as the subscribers do.
    #[arg(long)]
    webhook: bool,
}

type Failure = String;

/// One read of the mix: when (since the start), which SKU, HTTP status, latency (ms), the
/// `Age` header, and whether it was served stale.
type Read = (Duration, usize, u16, f64, Option<u64>, bool);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Bench {
    args: Args,
    http: reqwest::Client,
    /// Which replica the next request goes to.
    turn: std::sync::atomic::AtomicUsize,
}

impl Bench {
    /// The next replica's base URL, in turn.
    fn gateway(&self) -> &str {
        self.nth(self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    fn nth(&self, i: usize) -> &str {
        let n = self.args.gateway.len().max(1);
        self.args
            .gateway
            .get(i % n)
            .map_or("http://127.0.0.1:8080", String::as_str)
    }

    /// A replica for a write and the next one (another, when there are several) for the read
    /// that checks it.
    fn write_and_check(&self) -> (&str, &str) {
        let i = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.nth(i), self.nth(i + 1))
    }

    async fn admin(&self, path: &str) -> Result<Value, Failure> {
        let url = format!("{}/__admin/{path}", self.args.emulator);
        self.http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url}: {e}"))
    }

    async fn vendor_calls(&self, method: &str) -> Result<u64, Failure> {
        Ok(self.admin("counters").await?["methods"][method]["calls"]
            .as_u64()
            .unwrap_or(0))
    }

    async fn specs(&self) -> Result<Vec<String>, Failure> {
        let summary = self.admin("summary").await?;
        let specs: Vec<String> = summary["spec_nos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if specs.is_empty() {
            return Err("the emulator lists no specs".into());
        }
        Ok(specs)
    }

    async fn set_latency(&self, ms: u64) -> Result<(), Failure> {
        let url = format!("{}/__admin/faults", self.args.emulator);
        let faults = json!({ "latency_min_ms": ms, "latency_max_ms": ms });
        let r = self
            .http
            .put(&url)
            .json(&faults)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url}: {}", r.status()))
        }
    }

    /// The token of client number `client`.
    fn token(&self, client: usize) -> &str {
        let tokens = &self.args.token;
        tokens
            .get(client % tokens.len().max(1))
            .map_or("", String::as_str)
    }

    fn stock(&self, specs: &[&str]) -> reqwest::RequestBuilder {
        self.stock_as(0, specs)
    }

    fn stock_as(&self, client: usize, specs: &[&str]) -> reqwest::RequestBuilder {
        let query: Vec<(&str, &str)> = specs.iter().map(|s| ("spec_no", *s)).collect();
        self.http
            .get(format!("{}/v1/stock", self.gateway()))
            .query(&query)
            .bearer_auth(self.token(client))
    }

    async fn miss(&self, n: usize) -> Result<Value, Failure> {
        let all = self.specs().await?;
        // From the middle of the list: the hit scenarios cache the first SKUs, the stampede
        // uses the last one.
        let Some(specs) = all.get(all.len() / 2..all.len() / 2 + 2 * n) else {
            return Err(format!(
                "the miss scenario needs {} specs, the emulator has {}",
                all.len() / 2 + 2 * n,
                all.len()
            ));
        };
        let secret = SecretString::from("12345");
        let creds = EnterpriseCredentials::new(
            &format!("{}/openapi2/", self.args.emulator),
            "test2",
            "test2-xx",
            &secret,
        )
        .map_err(|e| e.to_string())?;
        let direct = WdtClient::builder()
            .enterprise(creds)
            .build()
            .map_err(|e| e.to_string())?;
        let (mut through, mut straight) = (Vec::with_capacity(n), Vec::with_capacity(n));
        // Warm both connection pools first.
        let _ = self.stock(&[specs[2 * n - 1].as_str()]).send().await;
        for i in 0..n {
            let started = Instant::now();
            direct
                .query(&StockQueryDetail {
                    spec_no: Some(specs[n + i].clone()),
                    page_size: Some(100),
                    page_no: Some(0),
                    ..StockQueryDetail::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            straight.push(ms(started.elapsed()));
            let started = Instant::now();
            let r = self
                .stock(&[specs[i].as_str()])
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let miss = r
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("fwd=miss"));
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            through.push(ms(started.elapsed()));
            if !ok || !miss {
                return Err(format!("{} was not a served miss", specs[i]));
            }
        }
        through.sort_by(f64::total_cmp);
        straight.sort_by(f64::total_cmp);
        Ok(json!({
            "requests": n,
            "gateway_p50_ms": percentile(&through, 50.0),
            "gateway_p99_ms": percentile(&through, 99.0),
            "direct_p50_ms": percentile(&straight, 50.0),
            "direct_p99_ms": percentile(&straight, 99.0),
            "added_p50_ms": percentile(&through, 50.0) - percentile(&straight, 50.0),
        }))
    }

    async fn stampede(&self, n: usize, latency_ms: u64) -> Result<Value, Failure> {
        let specs = self.specs().await?;
        let spec = specs.last().cloned().ok_or_else(|| "no spec".to_owned())?;
        let before = self.vendor_calls("stock_query_detail.php").await?;
        self.set_latency(latency_ms).await?;
        let started = Instant::now();
        let results = futures::future::join_all((0..n).map(|_| async {
            let r = self.stock(&[spec.as_str()]).send().await.ok()?;
            let ok = r.status().is_success();
            r.bytes().await.ok()?;
            Some(ok)
        }))
        .await;
        let elapsed = started.elapsed();
        self.set_latency(0).await?;
        let after = self.vendor_calls("stock_query_detail.php").await?;
        let ok = results.iter().filter(|r| **r == Some(true)).count();
        Ok(json!({
            "requests": n,
            "ok": ok,
            "errors": n - ok,
            "vendor_calls": after - before,
            "vendor_latency_ms": latency_ms,
            "elapsed_ms": ms(elapsed),
        }))
    }

    async fn fill(&self, entries: usize) -> Result<Value, Failure> {
        let specs = self.specs().await?;
        if specs.len() < entries {
            return Err(format!(
                "filling {entries} entries needs as many specs; the emulator has {}",
                specs.len()
            ));
        }
        let before = self.vendor_calls("stock_query_detail.php").await?;
        let started = Instant::now();
        let chunks: Vec<&[String]> = specs[..entries].chunks(100).collect();
        let failures: usize = futures::stream::iter(chunks)
            .map(|chunk| async move {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                match self.stock(&refs).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        0
                    }
                    _ => 1,
                }
            })
            .buffer_unordered(4)
            .collect::<Vec<usize>>()
            .await
            .into_iter()
            .sum();
        let after = self.vendor_calls("stock_query_detail.php").await?;
        Ok(json!({
            "entries": entries,
            "failed_requests": failures,
            "vendor_calls": after - before,
            "secs": started.elapsed().as_secs_f64(),
        }))
    }

    /// The emulator's call counters by method.
    async fn counters(&self) -> Result<BTreeMap<String, u64>, Failure> {
        let counters = self.admin("counters").await?;
        Ok(counters["methods"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v["calls"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The emulator's admin URL of one spec's stock.
    fn admin_stock_url(&self, spec: &str) -> Result<reqwest::Url, Failure> {
        let mut url = reqwest::Url::parse(&format!("{}/__admin/stock/", self.args.emulator))
            .map_err(|e| e.to_string())?;
        url.path_segments_mut()
            .map_err(|()| "the emulator's URL cannot be a base".to_owned())?
            .pop_if_empty()
            .push(spec);
        Ok(url)
    }

    /// A webhook receiver on a loopback port that records each row of every `stock.changed`
    /// message as an event (answering 204), and its endpoint registered on the first gateway:
    /// the endpoint's id and the receiver's task.
    async fn webhook_receiver(
        &self,
        events: Arc<Mutex<Vec<Event>>>,
    ) -> Result<(String, tokio::task::JoinHandle<()>), Failure> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("webhook receiver: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("webhook receiver: {e}"))?
            .port();
        let receive = move |body: axum::body::Bytes| {
            let events = events.clone();
            async move {
                let at = Instant::now();
                let message: Value = serde_json::from_slice(&body).unwrap_or_default();
                if let (Some(rows), Ok(mut events)) =
                    (message["data"]["stock_levels"].as_array(), events.lock())
                {
                    for row in rows {
                        events.push(Event {
                            at,
                            spec: row["spec_no"].as_str().unwrap_or_default().to_owned(),
                            warehouse: row["warehouse_no"].as_str().unwrap_or_default().to_owned(),
                            on_hand: number(&row["on_hand"]),
                        });
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(receive));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let made = self
            .http
            .post(format!("{}/v1/webhook-endpoints", self.nth(0)))
            .bearer_auth(self.token(0))
            .json(&json!({
                "url": format!("http://127.0.0.1:{port}/hook"),
                "events": ["stock.changed"],
                "description": "bench driver",
            }))
            .send()
            .await
            .map_err(|e| format!("registering the webhook endpoint: {e}"))?;
        let status = made.status();
        let body: Value = made.json().await.unwrap_or_default();
        if !status.is_success() {
            server.abort();
            return Err(format!("registering the webhook endpoint: {status} {body}"));
        }
        Ok((body["id"].as_str().unwrap_or_default().to_owned(), server))
    }

    /// One direct stock change in the ERP: the good quantity of `spec` in `warehouse` becomes a
    /// new random number (never the current one, so the row does change). Answers when the
    /// change was sent and when its answer came back, and the row's stock (on hand) after it.
    async fn direct_change(
        &self,
        spec: &str,
        warehouse: &str,
    ) -> Result<(Instant, Instant, f64), Failure> {
        let url = self.admin_stock_url(spec)?;
        let view: Value = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let current = row_number(&view, warehouse, "good");
        let quantity = loop {
            let q = f64::from(rand::rng().random_range(1..1000u32));
            if current != Some(q) {
                break q;
            }
        };
        let sent = Instant::now();
        let r = self
            .http
            .post(url.clone())
            .json(&json!({ "warehouse_no": warehouse, "quantity": quantity.to_string() }))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let returned = Instant::now();
        if !r.status().is_success() {
            return Err(format!("{url}: {}", r.status()));
        }
        let view: Value = r.json().await.map_err(|e| format!("{url}: {e}"))?;
        let on_hand = row_number(&view, warehouse, "stock_num")
            .ok_or_else(|| format!("{url}: no {warehouse} row after the change"))?;
        Ok((sent, returned, on_hand))
    }

    #[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
    async fn mix(&self, p: &MixArgs) -> Result<Value, Failure> {
        let duration = Duration::from_secs_f64(p.duration);
        let warmup = Duration::from_secs_f64(p.warmup);
        let ttl = Duration::from_secs(p.ttl);
        let take_every = Duration::from_secs_f64(p.take_every);
        let specs = Arc::new(self.specs().await?);
        let cdf = Arc::new(zipf_cdf(specs.len(), p.zipf));
        let direct_cdf = zipf_cdf(p.direct_skus.clamp(1, specs.len()), p.zipf);
        let recent = Recent::new(Duration::from_secs_f64(p.change_gap));
        let changes: Mutex<Vec<Change>> = Mutex::new(Vec::new());
        let events: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Subscribers connect before the run: one to the SKUs the direct changes draw from,
        // one to every SKU (the stock takes').
        let subscribers = if p.subscribe {
            let direct_specs = &specs[..direct_cdf.len()];
            let queries = [
                format!(
                    "subscription {{ stockChanged(specNos: {}) {{ specNo warehouseNo onHand modifiedAt }} }}",
                    Value::from(direct_specs.to_vec())
                ),
                "subscription { stockChanged { specNo warehouseNo onHand modifiedAt } }".to_owned(),
            ];
            let url = format!("{}/graphql", self.nth(0).replacen("http", "ws", 1));
            let mut connected = Vec::new();
            let mut failure = None;
            for (id, query) in queries.iter().enumerate() {
                match subscribe(&url, self.token(0), query).await {
                    Ok(ws) => connected.push((id, query.clone(), ws)),
                    Err(e) => {
                        failure = Some(format!("no subscription endpoint: {e}"));
                        break;
                    }
                }
            }
            match failure {
                Some(note) => Err(note),
                None => Ok(connected
                    .into_iter()
                    .map(|(id, query, ws)| {
                        let (events, stopped) = (events.clone(), stopped.clone());
                        (query, tokio::spawn(listen(ws, id, events, stopped)))
                    })
                    .collect::<Vec<_>>()),
            }
        } else {
            Ok(Vec::new())
        };
        let hooked: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
        let webhook = match p.webhook {
            true => Some(self.webhook_receiver(hooked.clone()).await?),
            false => None,
        };
        let start = Instant::now();
        let measured_from = start + warmup;
        let deadline = measured_from + duration;
        let period = Duration::from_secs_f64(1.0 / p.rate.max(0.001));
        let log: Arc<Mutex<Vec<Read>>> = Arc::new(Mutex::new(Vec::new()));
        let clients = p.clients;
        let readers = (0..clients).map(|c| {
            let (specs, cdf, log) = (specs.clone(), cdf.clone(), log.clone());
            async move {
                // Spread the clients' ticks over one period.
                let offset = period.mul_f64(c as f64 / clients.max(1) as f64);
                let mut next = start + offset;
                while next < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    next += period;
                    let k = sample(&cdf, rand::rng().random::<f64>());
                    let t = Instant::now();
                    let (status, age, stale) =
                        match self.stock_as(c, &[specs[k].as_str()]).send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let header = |name: &str| {
                                    r.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned)
                                };
                                let age = header("age").and_then(|a| a.parse().ok());
                                let stale =
                                    header("cache-status").is_some_and(|s| s.contains("stale"));
                                let _ = r.bytes().await;
                                (status, age, stale)
                            }
                            Err(_) => (0, None, false),
                        };
                    let latency = ms(t.elapsed());
                    if t >= measured_from
                        && let Ok(mut log) = log.lock()
                    {
                        log.push((t - start, k, status, latency, age, stale));
                    }
                }
            }
        });
        let takes = async {
            let (mut takes, mut fresh_after_take, mut failed) = (0u64, 0u64, 0u64);
            let mut next = start + take_every;
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += take_every;
                let k = recent.draw(&cdf, TAKE_WAREHOUSE);
                let quantity = rand::rng().random_range(1..1000u32);
                // Good stock counted, defective stock counted as none: on hand is then exactly
                // the count.
                let body = json!({ "warehouse_no": TAKE_WAREHOUSE, "mode": "all", "remark": "bench",
                    "lines": [{ "spec_no": specs[k], "quantity": quantity.to_string() },
                              { "spec_no": specs[k], "quantity": "0", "defect": true }] });
                let (writer, checker) = self.write_and_check();
                let sent = Instant::now();
                let ok = self
                    .http
                    .post(format!("{writer}/v1/stock-takes"))
                    .bearer_auth(self.token(0))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let returned = Instant::now();
                let measured = sent >= measured_from;
                if !ok {
                    failed += u64::from(measured);
                    continue;
                }
                if let Ok(mut changes) = changes.lock() {
                    changes.push(Change {
                        take: true,
                        sent,
                        returned,
                        spec: specs[k].clone(),
                        warehouse: TAKE_WAREHOUSE,
                        on_hand: f64::from(quantity),
                    });
                }
                takes += u64::from(measured);
                // The next read of that SKU must show the count (invalidation, not a TTL).
                let read: Option<Value> = match self
                    .http
                    .get(format!("{checker}/v1/stock"))
                    .query(&[
                        ("spec_no", specs[k].as_str()),
                        ("warehouse_no", TAKE_WAREHOUSE),
                    ])
                    .bearer_auth(self.token(0))
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                let on_hand = read
                    .as_ref()
                    .and_then(|v| v["items"][0]["on_hand"].as_str())
                    .and_then(|s| s.split('.').next())
                    .and_then(|s| s.parse::<u32>().ok());
                if measured && on_hand == Some(quantity) {
                    fresh_after_take += 1;
                }
            }
            (takes, fresh_after_take, failed)
        };
        // Direct changes in the ERP, as people and other systems make them.
        let direct = async {
            let (mut made, mut failed, mut first_error) = (0u64, 0u64, None);
            if p.direct_every <= 0.0 {
                return (made, failed, first_error);
            }
            let every = Duration::from_secs_f64(p.direct_every);
            let mut next = start + every;
            let mut turn = 0;
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += every;
                let warehouse = DIRECT_WAREHOUSES[turn % DIRECT_WAREHOUSES.len()];
                turn += 1;
                let k = recent.draw(&direct_cdf, warehouse);
                let change = self.direct_change(&specs[k], warehouse).await;
                let measured = Instant::now() >= measured_from;
                match change {
                    Ok((sent, returned, on_hand)) => {
                        made += u64::from(sent >= measured_from);
                        if let Ok(mut changes) = changes.lock() {
                            changes.push(Change {
                                take: false,
                                sent,
                                returned,
                                spec: specs[k].clone(),
                                warehouse,
                                on_hand,
                            });
                        }
                    }
                    Err(e) => {
                        failed += u64::from(measured);
                        first_error.get_or_insert(e);
                    }
                }
            }
            (made, failed, first_error)
        };
        // The ERP's counters when the measured phase starts.
        let boundary = async {
            tokio::time::sleep_until(measured_from.into()).await;
            self.counters().await
        };
        let (
            (),
            (takes, fresh_after_take, failed_takes),
            (direct_made, direct_failed, direct_error),
            before,
        ) = tokio::join!(
            futures::future::join_all(readers).map(drop),
            takes,
            direct,
            boundary
        );
        let before = before?;
        let elapsed = start.elapsed().saturating_sub(warmup);
        let after = self.counters().await?;
        let by_method: BTreeMap<&String, u64> = after
            .iter()
            .map(|(m, n)| (m, n - before.get(m).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let erp_calls: u64 = by_method.values().sum();
        let calls = by_method
            .iter()
            .find(|(m, _)| m.as_str() == "stock_query_detail.php")
            .map_or(0, |(_, n)| *n);
        let changes = changes.into_inner().unwrap_or_default();
        let subscriptions = match subscribers {
            Err(note) => json!({ "skipped": note }),
            Ok(subscribers) if subscribers.is_empty() => Value::Null,
            Ok(subscribers) => {
                // Wait for the events of the last changes (or until every change was seen).
                drain(&changes, measured_from, &events, p.drain).await;
                let _ = stop.send(true);
                let mut reports = Vec::new();
                for (query, handle) in subscribers {
                    let report = handle
                        .await
                        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
                    reports.push(json!({ "query": query, "report": report }));
                }
                let events = events.lock().map(|e| e.clone()).unwrap_or_default();
                let mut report = latencies(&changes, measured_from, &events);
                report["subscribers"] = json!(reports);
                report["events"] = json!(events.len());
                report
            }
        };
        let webhooks = match webhook {
            None => Value::Null,
            Some((endpoint, server)) => {
                // The subscribers' drain has passed; wait a little longer for messages only.
                drain(&changes, measured_from, &hooked, p.drain).await;
                server.abort();
                let events = hooked.lock().map(|e| e.clone()).unwrap_or_default();
                let mut report = latencies(&changes, measured_from, &events);
                report["endpoint"] = json!(endpoint);
                report["rows"] = json!(events.len());
                report
            }
        };
        let log = log.lock().map(|l| l.clone()).unwrap_or_default();
        let requests = log.len();
        let ok = log.iter().filter(|r| r.2 == 200).count();
        let stale = log.iter().filter(|r| r.5).count();
        // At most one load per key per TTL window: loads of a key are at least a TTL apart
        // unless a write invalidated it, so an aligned window of one TTL holds at most one.
        let mut windows: BTreeMap<u64, HashSet<usize>> = BTreeMap::new();
        for (at, k, ..) in &log {
            windows
                .entry(at.as_secs() / ttl.as_secs().max(1))
                .or_default()
                .insert(*k);
        }
        let distinct_per_window: usize = windows.values().map(HashSet::len).sum();
        let mut latencies: Vec<f64> = log.iter().map(|r| r.3).collect();
        latencies.sort_by(f64::total_cmp);
        let mut ages: Vec<f64> = log.iter().filter_map(|r| r.4).map(|a| a as f64).collect();
        ages.sort_by(f64::total_cmp);
        // The vendor's view: the most calls of the method in any 60 s.
        let calls_log = self
            .admin("calls?method=stock_query_detail.php&limit=10000")
            .await?;
        let mut at: Vec<i64> = calls_log["calls"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["at_ms"].as_i64()).collect())
            .unwrap_or_default();
        at.sort_unstable();
        let mut max_per_minute = 0;
        let mut lo = 0;
        for hi in 0..at.len() {
            while at[hi] - at[lo] >= 60_000 {
                lo += 1;
            }
            max_per_minute = max_per_minute.max(hi - lo + 1);
        }
        let mut out = json!({
            "duration_s": elapsed.as_secs_f64(),
            "clients": clients,
            "requests": requests,
            "rps": requests as f64 / elapsed.as_secs_f64(),
            "errors": requests - ok,
            "p50_ms": percentile(&latencies, 50.0),
            "p99_ms": percentile(&latencies, 99.0),
            "vendor_calls": calls,
            "vendor_calls_per_1000": calls as f64 * 1000.0 / requests.max(1) as f64,
            "erp_calls": erp_calls,
            "erp_calls_per_1000": erp_calls as f64 * 1000.0 / requests.max(1) as f64,
            "erp_calls_by_method": by_method,
            "distinct_keys_per_ttl_window": distinct_per_window,
            "stock_takes": takes,
            "failed_stock_takes": failed_takes,
            "call_bound": distinct_per_window as u64 + takes,
            "max_vendor_calls_in_any_minute": max_per_minute,
            "stale_answers": stale,
            "age_p50_s": percentile(&ages, 50.0),
            "age_p99_s": percentile(&ages, 99.0),
            "age_max_s": ages.last().copied().unwrap_or(0.0),
            "fresh_reads_after_take": fresh_after_take,
            "specs": specs.len(),
            "zipf": p.zipf,
            "ttl_s": ttl.as_secs(),
        });
        if p.warmup > 0.0 {
            out["warmup_s"] = json!(p.warmup);
        }
        if p.direct_every > 0.0 {
            out["direct_changes"] = json!({
                "every_s": p.direct_every,
                "skus": direct_cdf.len(),
                "warehouses": DIRECT_WAREHOUSES,
                "made": direct_made,
                "failed": direct_failed,
                "first_error": direct_error,
            });
        }
        if p.change_gap > 0.0 {
            out["change_gap_s"] = json!(p.change_gap);
        }
        if !subscriptions.is_null() {
            out["subscriptions"] = subscriptions;
        }
        if !webhooks.is_null() {
            out["webhooks"] = webhooks;
        }
        Ok(out)
    }
}

/// The warehouse of the mix's stock takes.
const TAKE_WAREHOUSE: &str = "WH-SH01";
/// The warehouses of direct changes, in turn (not the takes': a take and a direct change never
/// change the same row).
const DIRECT_WAREHOUSES: [&str; 2] = ["WH-BJ01", "WH-GZ01"];

/// A number of a row of the emulator's admin stock view (`good`, `stock_num`, …).
fn row_number(view: &Value, warehouse: &str, field: &str) -> Option<f64> {
    view["rows"]
        .as_array()?
        .iter()
        .find(|r| r["warehouse_no"] == warehouse)
        .and_then(|r| number(&r[field]))
}

/// A decimal written as a JSON string or number.
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Which rows were changed lately, so that a row is not changed twice within the gap.
struct Recent {
    gap: Duration,
    last: Mutex<HashMap<(usize, &'static str), Instant>>,
}

impl Recent {
    fn new(gap: Duration) -> Self {
        Self {
            gap,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// A SKU (an index) drawn from `cdf` whose row in `warehouse` was not changed within the
    /// gap (after 100 draws, the last one).
    fn draw(&self, cdf: &[f64], warehouse: &'static str) -> usize {
        let mut k = sample(cdf, rand::rng().random::<f64>());
        if self.gap.is_zero() {
            return k;
        }
        let Ok(mut last) = self.last.lock() else {
            return k;
        };
        for _ in 0..100 {
            if last
                .get(&(k, warehouse))
                .is_none_or(|t| t.elapsed() >= self.gap)
            {
                break;
            }
            k = sample(cdf, rand::rng().random::<f64>());
        }
        last.insert((k, warehouse), Instant::now());
        k
    }
}

/// A stock change the mix made: a take through the gateway or a direct change in the ERP.
#[derive(Debug, Clone)]
struct Change {
    take: bool,
    /// When it was sent and when its answer came back.
    sent: Instant,
    returned: Instant,
    spec: String,
    warehouse: &'static str,
    /// The row's on-hand stock after it.
    on_hand: f64,
}

impl Change {
    /// The first event that shows this change: its row with its on-hand stock, received after
    /// it was sent.
    fn seen_in<'a>(&self, events: &'a [Event]) -> Option<&'a Event> {
        events.iter().find(|e| {
            e.at >= self.sent
                && e.spec == self.spec
                && e.warehouse == self.warehouse
                && e.on_hand.is_some_and(|q| (q - self.on_hand).abs() < 1e-6)
        })
    }
}

/// One `stockChanged` event as a subscriber received it.
#[derive(Debug, Clone)]
struct Event {
    at: Instant,
    spec: String,
    warehouse: String,
    on_hand: Option<f64>,
}

/// Waits up to `patience` seconds until every change made since `from` shows in `events`.
async fn drain(changes: &[Change], from: Instant, events: &Mutex<Vec<Event>>, patience: f64) {
    let until = Instant::now() + Duration::from_secs_f64(patience);
    while Instant::now() < until {
        let all_seen = events.lock().is_ok_and(|events| {
            changes
                .iter()
                .filter(|c| c.sent >= from)
                .all(|c| c.seen_in(&events).is_some())
        });
        if all_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latencies of the changes made since `from` to their events, direct changes and stock
/// takes apart.
fn latencies(changes: &[Change], from: Instant, events: &[Event]) -> Value {
    let measured: Vec<&Change> = changes.iter().filter(|c| c.sent >= from).collect();
    json!({
        "direct": latency_report(measured.iter().filter(|c| !c.take), events),
        "takes": latency_report(measured.iter().filter(|c| c.take), events),
    })
}

/// Changes made and seen, and the latency from each change's answer to its event.
fn latency_report<'a>(changes: impl Iterator<Item = &'a &'a Change>, events: &[Event]) -> Value {
    let (mut made, mut latencies, mut missing) = (0usize, Vec::new(), Vec::new());
    for c in changes {
        made += 1;
        match c.seen_in(events) {
            Some(e) => latencies.push(ms(e.at.saturating_duration_since(c.returned))),
            None if missing.len() < 5 => {
                missing.push(json!({ "spec_no": c.spec, "warehouse_no": c.warehouse,
                                     "on_hand": c.on_hand }));
            }
            None => {}
        }
    }
    latencies.sort_by(f64::total_cmp);
    json!({
        "made": made,
        "seen": latencies.len(),
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": latencies.last().copied(),
        "missing": missing,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws connection to `url` and subscribes `query` (id "1"): the
/// handshake, `connection_init` with the token, `connection_ack`, `subscribe`.
async fn subscribe(url: &str, token: &str, query: &str) -> Result<Ws, Failure> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    let mut request = url
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| format!("{url}: no WebSocket handshake within 10 s"))?
    .map_err(|e| format!("{url}: {e}"))?;
    if response
        .headers()
        .get("sec-websocket-protocol")
        .is_none_or(|p| p != "graphql-transport-ws")
    {
        return Err(format!("{url}: graphql-transport-ws not accepted"));
    }
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({ "type": "connection_init",
                         "payload": { "Authorization": format!("Bearer {token}") } })))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("connection_ack") => return Ok(()),
                        Some("ping") => {
                            let _ = ws.send(send(json!({ "type": "pong" }))).await;
                        }
                        _ => return Err(format!("{url}: {text} instead of connection_ack")),
                    }
                }
                Ok(Message::Close(frame)) => {
                    return Err(format!("{url}: closed before connection_ack: {frame:?}"));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{url}: {e}")),
            }
        }
        Err(format!("{url}: closed before connection_ack"))
    })
    .await
    .map_err(|_| format!("{url}: no connection_ack within 10 s"))?;
    ack?;
    ws.send(send(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }),
    ))
    .await
    .map_err(|e| format!("{url}: {e}"))?;
    Ok(ws)
}

/// Reads a subscription's events into `events` (answering pings) until `stop`, then completes
/// it and closes; answers how many events and messages it got and how it ended.
async fn listen(
    mut ws: Ws,
    id: usize,
    events: Arc<Mutex<Vec<Event>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Value {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let send = |v: Value| Message::Text(v.to_string().into());
    let (mut received, mut errors, mut ended) = (0u64, Vec::new(), None);
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            m = ws.next() => m,
        };
        let at = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("next") => {
                        let row = &v["payload"]["data"]["stockChanged"];
                        if row.is_object() {
                            received += 1;
                            if let Ok(mut events) = events.lock() {
                                events.push(Event {
                                    at,
                                    spec: row["specNo"].as_str().unwrap_or_default().to_owned(),
                                    warehouse: row["warehouseNo"]
                                        .as_str()
                                        .unwrap_or_default()
                                        .to_owned(),
                                    on_hand: number(&row["onHand"]),
                                });
                            }
                        } else if errors.len() < 5 {
                            errors.push(v["payload"].clone());
                        }
                    }
                    Some("ping") => {
                        let _ = ws.send(send(json!({ "type": "pong" }))).await;
                    }
                    Some("pong") => {}
                    Some("error") => {
                        ended = Some(format!("error: {}", v["payload"]));
                        break;
                    }
                    Some("complete") => {
                        ended = Some("completed by the server".to_owned());
                        break;
                    }
                    _ => {
                        if errors.len() < 5 {
                            errors.push(v);
                        }
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                ended = Some(format!("closed by the server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                ended = Some(e.to_string());
                break;
            }
            None => {
                ended = Some("connection ended".to_owned());
                break;
            }
        }
    }
    if ended.is_none() {
        let _ = ws
            .send(send(json!({ "id": "1", "type": "complete" })))
            .await;
        let _ = ws.close(None).await;
    }
    json!({
        "subscriber": id,
        "events": received,
        "errors": errors,
        "ended_early": ended,
    })
}

/// The cumulative distribution of Zipf(`s`) over ranks 1..=n.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(s);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

fn sample(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let http = match reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(120))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let bench = Bench {
        args,
        http,
        turn: std::sync::atomic::AtomicUsize::new(0),
    };
    let result = match &bench.args.scenario {
        Scenario::Miss { n } => bench.miss(*n).await,
        Scenario::Stampede {
            n,
            vendor_latency_ms,
        } => bench.stampede(*n, *vendor_latency_ms).await,
        Scenario::Mix(mix) => bench.mix(mix).await,
        Scenario::Fill { entries } => bench.fill(*entries).await,
    };
    match result {
        Ok(v) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{v}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "wdt-bench-driver: {message}");
    ExitCode::from(2)
}
