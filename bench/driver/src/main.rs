//! `wdt-bench-driver`: the benchmark scenarios that need more than `wrk`. Each prints one JSON
//! object on stdout; `bench/bench.py` runs them and records the results.
//!
//! - `miss`: the gateway's added latency on a cache miss over a direct signed call of the same
//!   vendor request;
//! - `stampede`: N concurrent identical misses, and how many vendor calls they made;
//! - `mix`: Zipf-distributed reads from many clients with a stock take every few seconds;
//! - `fill`: fills the stock cache with N entries (for the memory scenario).

use std::collections::{BTreeMap, HashSet};
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
    /// Zipf reads from many clients, a stock take every few seconds.
    Mix {
        /// Seconds to run.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
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
    },
    /// Fills the stock cache with `entries` specs (100 per request).
    Fill {
        /// Entries to cache.
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
    },
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

    #[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
    async fn mix(
        &self,
        duration: Duration,
        clients: usize,
        rate: f64,
        zipf: f64,
        take_every: Duration,
        ttl: Duration,
    ) -> Result<Value, Failure> {
        let specs = Arc::new(self.specs().await?);
        let cdf = Arc::new(zipf_cdf(specs.len(), zipf));
        let before = self.vendor_calls("stock_query_detail.php").await?;
        let log: Arc<Mutex<Vec<Read>>> = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let deadline = start + duration;
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
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
                    if let Ok(mut log) = log.lock() {
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
                let k = sample(&cdf, rand::rng().random::<f64>());
                let quantity = rand::rng().random_range(1..1000u32);
                // Good stock counted, defective stock counted as none: on hand is then exactly
                // the count.
                let body = json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": "bench",
                    "lines": [{ "spec_no": specs[k], "quantity": quantity.to_string() },
                              { "spec_no": specs[k], "quantity": "0", "defect": true }] });
                let (writer, checker) = self.write_and_check();
                let ok = self
                    .http
                    .post(format!("{writer}/v1/stock-takes"))
                    .bearer_auth(self.token(0))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed += 1;
                    continue;
                }
                takes += 1;
                // The next read of that SKU must show the count (invalidation, not a TTL).
                let read: Option<Value> = match self
                    .http
                    .get(format!("{checker}/v1/stock"))
                    .query(&[("spec_no", specs[k].as_str()), ("warehouse_no", "WH-SH01")])
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
                if on_hand == Some(quantity) {
                    fresh_after_take += 1;
                }
            }
            (takes, fresh_after_take, failed)
        };
        let ((), (takes, fresh_after_take, failed_takes)) =
            tokio::join!(futures::future::join_all(readers).map(drop), takes);
        let elapsed = start.elapsed();
        let after = self.vendor_calls("stock_query_detail.php").await?;
        let calls = after - before;
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
        Ok(json!({
            "duration_s": elapsed.as_secs_f64(),
            "clients": clients,
            "requests": requests,
            "rps": requests as f64 / elapsed.as_secs_f64(),
            "errors": requests - ok,
            "p50_ms": percentile(&latencies, 50.0),
            "p99_ms": percentile(&latencies, 99.0),
            "vendor_calls": calls,
            "vendor_calls_per_1000": calls as f64 * 1000.0 / requests.max(1) as f64,
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
            "zipf": zipf,
            "ttl_s": ttl.as_secs(),
        }))
    }
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
        Scenario::Mix {
            duration,
            clients,
            rate,
            zipf,
            take_every,
            ttl,
        } => {
            bench
                .mix(
                    Duration::from_secs_f64(*duration),
                    *clients,
                    *rate,
                    *zipf,
                    Duration::from_secs_f64(*take_every),
                    Duration::from_secs(*ttl),
                )
                .await
        }
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
