//! `Idempotency-Key` for writes, for both facades: the first outcome of a key is kept and
//! replayed for the same key and request; the same key with another request is refused
//! (`IDEMPOTENCY_KEY_REUSED`); a duplicate while the first runs waits for it. Keys are scoped to
//! the caller (token subject) and kept for a bounded time, in this process or in Redis for all
//! replicas.
//!
//! The store knows nothing of HTTP frameworks: a facade hands it the write as a future of an
//! [`Outcome`] (status, headers, body as the facade answers them) and a [`Keep`] rule, and
//! renders its refusals (a [`DomainError`] with an idempotency code) in its own shape. Only
//! outcomes are kept, never refusals of the caller: a request refused for its token, scopes,
//! input, size or rate is not stored, so a corrected retry with the same key runs. A write whose
//! ERP answer was lost after it was sent (`WRITE_OUTCOME_UNKNOWN`) is kept like an outcome: it is
//! never sent again for that key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tracing::Instrument;

use crate::error::{DomainError, ErrorKind};

/// How long an in-flight record lasts without renewal (the owner renews it every third of
/// that): a replica that dies mid-write frees its keys after this.
const IN_FLIGHT: Duration = Duration::from_secs(10);
/// Longest a duplicate waits for the first request with its key before it is told to retry.
const DUPLICATE_WAIT: Duration = Duration::from_secs(8);

/// A write's answer as a facade gives it: what a replay answers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status.
    pub status: u16,
    /// The headers, in order (names in lowercase).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

#[cfg(feature = "http")]
impl Outcome {
    /// An HTTP answer as the store keeps it (its whole body read; a body that fails to read
    /// is kept empty).
    pub async fn of<B>(response: http::Response<B>) -> Self
    where
        B: http_body::Body,
    {
        use http_body_util::BodyExt as _;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|collected| collected.to_bytes().to_vec())
            .unwrap_or_default();
        Self {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body,
        }
    }

    /// The kept answer as an HTTP answer, marked `Idempotent-Replayed: true` when it is a
    /// replay.
    pub fn into_response(self, replayed: bool) -> http::Response<Vec<u8>> {
        let mut response = http::Response::new(self.body);
        *response.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::OK);
        let headers = response.headers_mut();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_bytes(v),
            ) {
                headers.append(k, v);
            }
        }
        if replayed {
            headers.insert(
                "idempotent-replayed",
                http::HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// Whether a first outcome is one to replay (`true`) or a refusal the caller may correct and
/// retry under the same key (`false`); given the status and the body.
pub type Keep = fn(u16, &[u8]) -> bool;

/// The fingerprint of a request: what a retry must repeat exactly (XXH3-128 of its parts,
/// each delimited by its length).
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest128().to_le_bytes()
}

/// Checks an `Idempotency-Key` header value: 1 to 255 visible ASCII characters.
///
/// # Errors
/// `BAD_USER_INPUT` saying what a key looks like.
pub fn key_of(value: &[u8]) -> Result<String, DomainError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            DomainError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })
}

/// Where first outcomes live: in this process, or in Redis for all replicas. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    /// Made on first use: a tenant that never writes with a key costs none of its memory.
    slots: Arc<std::sync::OnceLock<Cache<String, Arc<tokio::sync::Mutex<Slot>>>>>,
    max_keys: u64,
    /// With several replicas: the records in Redis.
    shared: Option<wdt_redis::Shared>,
    retention: Duration,
}

/// One key's record in this process. Its lock is held while a request with the key runs, so
/// duplicates wait for the outcome.
#[derive(Debug, Default)]
struct Slot {
    /// The request that produced `result`, or that runs (or last ran) now.
    fingerprint: [u8; 16],
    /// The kept outcome; `None` until one is kept (a run whose outcome is not kept leaves it
    /// `None`, so the next request with the key runs, whatever its body).
    result: Option<Outcome>,
}

/// An outcome, and whether it is a replay of an earlier request's.
pub type Answer = (Outcome, bool);

impl IdempotencyStore {
    /// A store keeping at most `max_keys` outcomes for `retention`.
    pub fn new(max_keys: u64, retention: Duration) -> Self {
        Self {
            slots: Arc::default(),
            max_keys,
            shared: None,
            retention,
        }
    }

    /// Keeps the records in Redis, so a retry that reaches another replica replays the first
    /// outcome and concurrent duplicates across replicas make one write. While Redis is
    /// unavailable, writes with a key are refused (`IDEMPOTENCY_UNAVAILABLE`) rather than
    /// risking a second write.
    #[must_use]
    pub fn shared(mut self, shared: wdt_redis::Shared) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Runs `work` at most once for `subject`'s `key` and the request `fingerprint`: the first
    /// request runs it (to the end, in its own task, even when its client goes away) and its
    /// outcome is replayed to retries when `keep` says it is one.
    ///
    /// # Errors
    /// `IDEMPOTENCY_KEY_REUSED` for another fingerprint under the key, `IDEMPOTENCY_KEY_IN_USE`
    /// when the first request still runs on another replica after a wait, and
    /// `IDEMPOTENCY_UNAVAILABLE` while the shared store is down. The caller checks the
    /// requester's scopes first: a replay is an answer like any other.
    pub async fn run<F>(
        &self,
        subject: &str,
        key: &str,
        fingerprint: [u8; 16],
        keep: Keep,
        work: F,
    ) -> Result<Answer, DomainError>
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let scope = format!("{subject}\u{0}{key}");
        if let Some(shared) = &self.shared {
            return run_shared(shared, self.retention, scope, fingerprint, keep, work).await;
        }
        let slots = self.slots.get_or_init(|| {
            Cache::builder()
                .max_capacity(self.max_keys)
                .time_to_live(self.retention)
                .build()
        });
        let slot = slots.get_with(scope, async { Arc::default() }).await;
        // In its own task: if the client goes away mid-write, the write still finishes and its
        // outcome is kept, so a retry replays it instead of writing twice.
        let task = tokio::spawn(crate::Attribution::carry(
            async move {
                let mut slot = slot.lock_owned().await;
                match &slot.result {
                    Some(kept) if slot.fingerprint == fingerprint => {
                        return Ok((kept.clone(), true));
                    }
                    Some(_) => return Err(reused()),
                    None => {}
                }
                slot.fingerprint = fingerprint;
                let outcome = work.await;
                if keep(outcome.status, &outcome.body) {
                    slot.result = Some(outcome.clone());
                }
                Ok((outcome, false))
            }
            .in_current_span(),
        ));
        task.await.unwrap_or_else(|_| Err(failed()))
    }
}

impl Default for IdempotencyStore {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(24 * 3600))
    }
}

/// The records in Redis: the first request with a key runs (renewing its in-flight record);
/// duplicates on any replica wait for its outcome and replay it.
async fn run_shared<F>(
    shared: &wdt_redis::Shared,
    retention: Duration,
    scope: String,
    fingerprint: [u8; 16],
    keep: Keep,
    work: F,
) -> Result<Answer, DomainError>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let owner = wdt_redis::token();
    let give_up = tokio::time::Instant::now() + DUPLICATE_WAIT;
    loop {
        let begun = shared
            .idempotency_begin(&scope, &owner, &fingerprint, IN_FLIGHT, retention)
            .await;
        match begun {
            Err(_) => {
                // The script may still run once Redis answers again (a hung server runs what
                // it was sent when it wakes up): give up the record it would leave, or a retry
                // would find a write that never started and be told its outcome is unknown.
                tokio::spawn(settle(shared.clone(), scope, owner, None, retention));
                return Err(unavailable());
            }
            Ok(wdt_redis::Begin::Mismatch) => return Err(reused()),
            Ok(wdt_redis::Begin::Done(replay)) => return Ok((from_replay(&replay), true)),
            Ok(wdt_redis::Begin::Abandoned) => return Err(abandoned()),
            Ok(wdt_redis::Begin::InFlight(left)) => {
                if tokio::time::Instant::now() >= give_up {
                    return Err(in_use());
                }
                let pause = left.clamp(Duration::from_millis(10), Duration::from_millis(50));
                tokio::time::sleep(pause).await;
            }
            Ok(wdt_redis::Begin::New) => break,
        }
    }
    // The first request runs in its own task, so a client that goes away does not stop the
    // write from finishing and its outcome from being kept.
    let shared = shared.clone();
    let task = tokio::spawn(crate::Attribution::carry(
        async move {
            let running = work;
            tokio::pin!(running);
            let every = IN_FLIGHT / 3;
            let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut running => break outcome,
                    _ = renew.tick() => {
                        // In its own task: a slow Redis never holds up the write.
                        let (shared, scope, owner) = (shared.clone(), scope.clone(), owner.clone());
                        tokio::spawn(async move {
                            if let Ok(false) = shared.idempotency_renew(&scope, &owner, IN_FLIGHT).await {
                                tracing::warn!("the Idempotency-Key's in-flight record expired while the write ran; a retry may run it again");
                            }
                        });
                    }
                }
            };
            let replay = keep(outcome.status, &outcome.body).then(|| to_replay(&outcome));
            match shared
                .idempotency_finish(&scope, &owner, replay.as_ref(), retention)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "the Idempotency-Key's record was gone before the write finished (Redis lost its data): its outcome is not kept, and a retry may run it again"
                ),
                Err(_) => {
                    tracing::warn!(
                        "Redis is unavailable: the write's outcome is kept for retries once it answers again; until then retries wait, then are told the outcome is unknown"
                    );
                    tokio::spawn(settle(shared.clone(), scope, owner, replay, retention));
                }
            }
            outcome
        }
        .in_current_span(),
    ));
    match task.await {
        Ok(outcome) => Ok((outcome, false)),
        Err(_) => Err(failed()),
    }
}

/// How long [`settle`] keeps trying to reach Redis.
const SETTLE_FOR: Duration = Duration::from_secs(120);

/// Stores the owner's outcome of a key (or, with `None`, gives up the record a request that never
/// ran may have left) once Redis answers again, trying every second for [`SETTLE_FOR`].
async fn settle(
    shared: wdt_redis::Shared,
    scope: String,
    owner: String,
    replay: Option<wdt_redis::Replay>,
    retention: Duration,
) {
    let give_up = tokio::time::Instant::now() + SETTLE_FOR;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match shared
            .idempotency_finish(&scope, &owner, replay.as_ref(), retention)
            .await
        {
            Ok(_) => return,
            Err(_) if tokio::time::Instant::now() >= give_up => {
                tracing::warn!(
                    "Redis stayed unavailable: an Idempotency-Key's record could not be settled; retries with the key are told the outcome is unknown"
                );
                return;
            }
            Err(_) => {}
        }
    }
}

fn refusal(kind: ErrorKind, message: &str, retry_after: Option<Duration>) -> DomainError {
    DomainError {
        kind,
        message: message.to_owned(),
        field: None,
        vendor: None,
        retry_after,
    }
}

fn reused() -> DomainError {
    refusal(
        ErrorKind::IdempotencyKeyReused,
        "this Idempotency-Key was used with a different request; use a new key for a new request",
        None,
    )
}

fn in_use() -> DomainError {
    refusal(
        ErrorKind::IdempotencyKeyInUse,
        "a request with this Idempotency-Key is still running; retry it in a moment to get its result",
        Some(Duration::from_secs(1)),
    )
}

fn abandoned() -> DomainError {
    refusal(
        ErrorKind::WriteOutcomeUnknown,
        "the replica that ran the first request with this Idempotency-Key stopped before it finished, so whether the ERP took the write is unknown and it is not sent again under this key; read the ERP's current state and, if the write is missing, send it again with a new key",
        None,
    )
}

fn unavailable() -> DomainError {
    refusal(
        ErrorKind::IdempotencyUnavailable,
        "the shared store of Idempotency-Keys (Redis) is unavailable, so this write could run twice; retry shortly, or send it without an Idempotency-Key if a duplicate is harmless",
        Some(Duration::from_secs(1)),
    )
}

fn failed() -> DomainError {
    DomainError::internal("the write failed unexpectedly")
}

/// Headers as JSON pairs (values that are not text are left out).
fn to_replay(outcome: &Outcome) -> wdt_redis::Replay {
    let head: Vec<(&str, &str)> = outcome
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), std::str::from_utf8(v).ok()?)))
        .collect();
    wdt_redis::Replay {
        status: outcome.status,
        head: serde_json::to_vec(&head).unwrap_or_default(),
        body: outcome.body.clone(),
    }
}

fn from_replay(replay: &wdt_redis::Replay) -> Outcome {
    let head: Vec<(String, String)> = serde_json::from_slice(&replay.head).unwrap_or_default();
    Outcome {
        status: replay.status,
        headers: head.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
        body: replay.body.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn keys_and_fingerprints() {
        assert_eq!(
            key_of(b"take-2026-11-23-001").unwrap(),
            "take-2026-11-23-001"
        );
        for bad in [&b""[..], b"has space", &[b'k'; 256], b"\xff"] {
            assert_eq!(key_of(bad).unwrap_err().kind, ErrorKind::InvalidInput);
        }
        assert_ne!(
            fingerprint(&[b"ab", b"c"]),
            fingerprint(&[b"a", b"bc"]),
            "parts are delimited"
        );
    }

    fn outcome(status: u16, body: &str) -> Outcome {
        Outcome {
            status,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn one_run_per_key_and_request_then_replays() {
        let store = IdempotencyStore::default();
        let keep: Keep = |status, _| status < 400;
        let first = store
            .run("s", "k", fingerprint(&[b"a"]), keep, async {
                outcome(201, "one")
            })
            .await
            .unwrap();
        assert_eq!(first, (outcome(201, "one"), false));
        let again = store
            .run("s", "k", fingerprint(&[b"a"]), keep, async {
                outcome(201, "two")
            })
            .await
            .unwrap();
        assert_eq!(again, (outcome(201, "one"), true), "replayed, not run");
        let other = store
            .run("s", "k", fingerprint(&[b"b"]), keep, async {
                outcome(201, "three")
            })
            .await
            .unwrap_err();
        assert_eq!(other.kind, ErrorKind::IdempotencyKeyReused);
        let another_subject = store
            .run("t", "k", fingerprint(&[b"b"]), keep, async {
                outcome(201, "four")
            })
            .await
            .unwrap();
        assert_eq!(
            another_subject,
            (outcome(201, "four"), false),
            "keys are per subject"
        );
    }

    #[tokio::test]
    async fn refusals_are_not_kept() {
        let store = IdempotencyStore::default();
        let keep: Keep = |status, _| status < 400;
        let refused = store
            .run("s", "k", fingerprint(&[b"a"]), keep, async {
                outcome(400, "bad")
            })
            .await
            .unwrap();
        assert_eq!(refused, (outcome(400, "bad"), false));
        let corrected = store
            .run("s", "k", fingerprint(&[b"b"]), keep, async {
                outcome(201, "ok")
            })
            .await
            .unwrap();
        assert_eq!(
            corrected,
            (outcome(201, "ok"), false),
            "a corrected retry runs"
        );
    }

    #[test]
    fn replays_through_redis_keep_text_headers() {
        let kept = outcome(201, "one");
        assert_eq!(from_replay(&to_replay(&kept)), kept);
    }

    #[tokio::test]
    async fn a_write_that_panics_is_an_internal_error_and_not_kept() {
        let store = IdempotencyStore::default();
        let keep: Keep = |status, _| status < 400;
        let failed = store
            .run("s", "k", fingerprint(&[b"a"]), keep, async {
                panic!("the write failed")
            })
            .await
            .unwrap_err();
        assert_eq!(failed.kind, ErrorKind::Internal);
        assert_eq!(failed.message, "the write failed unexpectedly");
        let retried = store
            .run("s", "k", fingerprint(&[b"a"]), keep, async {
                outcome(201, "ok")
            })
            .await
            .unwrap();
        assert_eq!(retried, (outcome(201, "ok"), false), "the retry runs");
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn outcomes_from_and_to_http_answers() {
        let answer = http::Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(String::from("{}"))
            .unwrap();
        let kept = Outcome::of(answer).await;
        assert_eq!(
            kept,
            Outcome {
                status: 201,
                headers: vec![
                    ("content-type".into(), b"application/json".to_vec()),
                    ("x-a".into(), b"1".to_vec()),
                    ("x-a".into(), b"2".to_vec()),
                ],
                body: b"{}".to_vec(),
            }
        );

        let first = kept.clone().into_response(false);
        assert_eq!(first.status(), 201);
        assert_eq!(first.headers()["content-type"], "application/json");
        let repeated: Vec<_> = first.headers().get_all("x-a").iter().collect();
        assert_eq!(repeated, ["1", "2"]);
        assert!(!first.headers().contains_key("idempotent-replayed"));
        assert_eq!(first.body(), b"{}");

        let replay = kept.into_response(true);
        assert_eq!(replay.status(), 201);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(replay.headers().len(), 4);
        assert_eq!(replay.body(), b"{}");

        let odd = Outcome {
            status: 1000,
            headers: vec![
                ("bad name".into(), b"x".to_vec()),
                ("x-ok".into(), b"y".to_vec()),
            ],
            body: Vec::new(),
        }
        .into_response(false);
        assert_eq!(odd.status(), 200, "a status HTTP cannot carry is 200");
        assert_eq!(
            odd.headers().len(),
            1,
            "a header HTTP cannot carry is left out"
        );
        assert_eq!(odd.headers()["x-ok"], "y");
    }

    /// The store on a real `redis-server`, as several replicas use it.
    mod shared {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Instant;

        use super::*;

        use wdt_redis::testing::Server;

        fn server() -> Server {
            Server::start()
        }

        /// A replica's own connection to Redis at `port`.
        fn connect(port: u16) -> wdt_redis::Shared {
            wdt_redis::Shared::connect(&wdt_redis::Settings {
                url: Some(secrecy::SecretString::from(format!(
                    "redis://127.0.0.1:{port}/"
                ))),
                namespace: "acct".into(),
                replicas: 2,
                timeout: Duration::from_secs(1),
                lease: Duration::from_secs(2),
            })
            .unwrap()
        }

        async fn replica(server: &Server) -> (IdempotencyStore, wdt_redis::Shared) {
            let shared = connect(server.port());
            assert!(shared.ping().await);
            (IdempotencyStore::default().shared(shared.clone()), shared)
        }

        const RETENTION: Duration = Duration::from_secs(3600);

        fn keep(status: u16, _: &[u8]) -> bool {
            status < 400
        }

        #[tokio::test]
        async fn replicas_replay_each_others_outcomes() {
            let server = server();
            let (a, _) = replica(&server).await;
            let (b, _) = replica(&server).await;
            let first = a
                .run("s", "k", fingerprint(&[b"a"]), keep, async {
                    outcome(201, "one")
                })
                .await
                .unwrap();
            assert_eq!(first, (outcome(201, "one"), false));
            let again = b
                .run("s", "k", fingerprint(&[b"a"]), keep, async {
                    outcome(201, "two")
                })
                .await
                .unwrap();
            assert_eq!(
                again,
                (outcome(201, "one"), true),
                "replayed on the other replica"
            );
            let other = b
                .run("s", "k", fingerprint(&[b"b"]), keep, async {
                    outcome(201, "three")
                })
                .await
                .unwrap_err();
            assert_eq!(other.kind, ErrorKind::IdempotencyKeyReused);

            let refused = a
                .run("s", "k2", fingerprint(&[b"a"]), keep, async {
                    outcome(400, "bad")
                })
                .await
                .unwrap();
            assert_eq!(refused, (outcome(400, "bad"), false));
            let corrected = b
                .run("s", "k2", fingerprint(&[b"b"]), keep, async {
                    outcome(201, "ok")
                })
                .await
                .unwrap();
            assert_eq!(
                corrected,
                (outcome(201, "ok"), false),
                "a refusal is not kept"
            );
        }

        #[tokio::test]
        async fn a_duplicate_on_another_replica_waits_for_the_first() {
            let server = server();
            let (a, _) = replica(&server).await;
            let (b, _) = replica(&server).await;
            let runs = Arc::new(AtomicUsize::new(0));
            let counted = |runs: &Arc<AtomicUsize>, body: &'static str| {
                let runs = Arc::clone(runs);
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    outcome(201, body)
                }
            };
            let first = tokio::spawn({
                let work = counted(&runs, "first");
                async move { a.run("s", "k", fingerprint(&[b"a"]), keep, work).await }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let duplicate = b
                .run(
                    "s",
                    "k",
                    fingerprint(&[b"a"]),
                    keep,
                    counted(&runs, "second"),
                )
                .await
                .unwrap();
            assert_eq!(duplicate, (outcome(201, "first"), true));
            assert_eq!(
                first.await.unwrap().unwrap(),
                (outcome(201, "first"), false)
            );
            assert_eq!(runs.load(Ordering::SeqCst), 1, "the write ran once");
        }

        #[tokio::test]
        async fn a_duplicate_gives_up_after_a_wait_when_the_first_still_runs() {
            let server = server();
            let (store, shared) = replica(&server).await;
            let fp = fingerprint(&[b"a"]);
            let begun = shared
                .idempotency_begin(
                    "s\u{0}k",
                    "elsewhere",
                    &fp,
                    Duration::from_secs(60),
                    RETENTION,
                )
                .await
                .unwrap();
            assert_eq!(begun, wdt_redis::Begin::New);
            let started = Instant::now();
            let busy = store
                .run("s", "k", fp, keep, async { outcome(201, "twice") })
                .await
                .unwrap_err();
            assert_eq!(busy.kind, ErrorKind::IdempotencyKeyInUse);
            assert_eq!(busy.retry_after, Some(Duration::from_secs(1)));
            let waited = started.elapsed();
            assert!(
                waited >= DUPLICATE_WAIT && waited < DUPLICATE_WAIT + Duration::from_secs(3),
                "waited {waited:?}"
            );
        }

        #[tokio::test]
        async fn a_record_whose_owner_died_is_not_run_again() {
            let server = server();
            let (store, shared) = replica(&server).await;
            let fp = fingerprint(&[b"a"]);
            let begun = shared
                .idempotency_begin("s\u{0}k", "died", &fp, Duration::from_millis(50), RETENTION)
                .await
                .unwrap();
            assert_eq!(begun, wdt_redis::Begin::New);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let unknown = store
                .run("s", "k", fp, keep, async { outcome(201, "twice") })
                .await
                .unwrap_err();
            assert_eq!(unknown.kind, ErrorKind::WriteOutcomeUnknown);
            assert_eq!(unknown.retry_after, None);
        }

        #[tokio::test]
        async fn a_long_write_renews_its_record() {
            let server = server();
            let (store, _) = replica(&server).await;
            let (_, other) = replica(&server).await;
            let fp = fingerprint(&[b"a"]);
            let started = Instant::now();
            let long = tokio::spawn(async move {
                store
                    .run("s", "k", fp, keep, async {
                        tokio::time::sleep(Duration::from_millis(4200)).await;
                        outcome(201, "long")
                    })
                    .await
            });
            // Renewed a third of the way (3.3 s), the lease has about 9.5 s left at 3.8 s;
            // not renewed, 6.2 s.
            tokio::time::sleep(Duration::from_millis(3800).saturating_sub(started.elapsed())).await;
            let seen = other
                .idempotency_begin("s\u{0}k", "another", &fp, IN_FLIGHT, RETENTION)
                .await
                .unwrap();
            let wdt_redis::Begin::InFlight(left) = seen else {
                panic!("{seen:?}")
            };
            assert!(left > Duration::from_secs(8), "left {left:?}");
            assert_eq!(long.await.unwrap().unwrap(), (outcome(201, "long"), false));
        }

        #[tokio::test]
        async fn without_redis_keyed_writes_are_refused() {
            // A port nothing listens on.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let store = IdempotencyStore::default().shared(connect(port));
            let refused = store
                .run("s", "k", fingerprint(&[b"a"]), keep, async {
                    outcome(201, "maybe twice")
                })
                .await
                .unwrap_err();
            assert_eq!(refused.kind, ErrorKind::IdempotencyUnavailable);
            assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        }

        #[tokio::test]
        async fn a_write_that_panics_is_an_internal_error() {
            let server = server();
            let (store, _) = replica(&server).await;
            let failed = store
                .run("s", "k", fingerprint(&[b"a"]), keep, async {
                    panic!("the write failed")
                })
                .await
                .unwrap_err();
            assert_eq!(failed.kind, ErrorKind::Internal);
        }
    }
}
