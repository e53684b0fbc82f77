//! Idempotency records for the whole cluster: the first request with a key runs, later ones
//! replay its stored response, wait for it, or are refused when the key came with another
//! request. One record per scope (caller and key): `i:<digest of the scope>` under the
//! account's prefix.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use crate::connection::{Shared, Unavailable, bytes, ms};

/// Starts or finds a record.
static BEGIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("idempotency/begin.lua")));
/// Stores the owner's result, or gives the key up.
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("idempotency/finish.lua")));
/// Extends an in-flight record.
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("idempotency/renew.lua")));

/// A stored response to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// HTTP status.
    pub status: u16,
    /// Headers, as the writer encoded them.
    pub head: Vec<u8>,
    /// Body.
    pub body: Vec<u8>,
}

/// The answer to [`Shared::idempotency_begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First with this key: run the request, then [`Shared::idempotency_finish`].
    New,
    /// The key was used with another request.
    Mismatch,
    /// The first request's result.
    Done(Replay),
    /// The first request is still running (its lease ends in this long unless renewed).
    InFlight(Duration),
    /// The first request's owner stopped renewing its lease before it finished (its replica
    /// died or lost Redis mid-write): the write may or may not have reached the ERP, so it
    /// must not run again under this key.
    Abandoned,
}

impl Shared {
    fn record_key(&self, scope: &str) -> String {
        let digest = xxhash_rust::xxh3::xxh3_128(scope.as_bytes());
        self.key("i", &format!("{digest:032x}"))
    }

    /// Starts (or finds) the record of `scope` (caller and key) for the request with
    /// `fingerprint`; a new record is `owner`'s, with a lease of `in_flight` that the owner
    /// renews, and is kept for `keep` (so that an abandoned one is remembered).
    ///
    /// # Errors
    /// Redis is unavailable (the outcome is unknown: a record may have been created).
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        owner: &str,
        fingerprint: &[u8],
        in_flight: Duration,
        keep: Duration,
    ) -> Result<Begin, Unavailable> {
        let mut con = self.con();
        let key = self.record_key(scope);
        let value: Value = self
            .run("idempotency", async move {
                BEGIN
                    .key(key)
                    .arg(owner)
                    .arg(fingerprint)
                    .arg(ms(in_flight))
                    .arg(ms(keep))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let Value::Array(parts) = value else {
            return Err(self.garbled("idempotency"));
        };
        let mut parts = parts.into_iter().map(bytes);
        let kind = parts.next().unwrap_or_default();
        Ok(match kind.as_slice() {
            b"new" => Begin::New,
            b"mismatch" => Begin::Mismatch,
            b"done" => {
                let status = parts.next().unwrap_or_default();
                let status = std::str::from_utf8(&status)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| self.garbled("idempotency"))?;
                Begin::Done(Replay {
                    status,
                    head: parts.next().unwrap_or_default(),
                    body: parts.next().unwrap_or_default(),
                })
            }
            b"abandoned" => Begin::Abandoned,
            b"inflight" => Begin::InFlight(Duration::from_millis(
                parts
                    .next()
                    .and_then(|s| String::from_utf8(s).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
            )),
            _ => return Err(self.garbled("idempotency")),
        })
    }

    /// The owner stores its result for `keep` (`None`: gives the key up, so a retry runs).
    /// `Ok(false)`: the record was no longer this owner's (it expired meanwhile).
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn idempotency_finish(
        &self,
        scope: &str,
        owner: &str,
        result: Option<&Replay>,
        keep: Duration,
    ) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let key = self.record_key(scope);
        let empty = Replay {
            status: 0,
            head: Vec::new(),
            body: Vec::new(),
        };
        let r = result.unwrap_or(&empty);
        self.run("idempotency", async move {
            FINISH
                .key(key)
                .arg(owner)
                .arg(r.status)
                .arg(&r.head)
                .arg(&r.body)
                .arg(ms(keep))
                .invoke_async::<i64>(&mut con)
                .await
        })
        .await
        .map(|finished| finished == 1)
    }

    /// The owner is still running the request: its record lasts `in_flight` longer.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn idempotency_renew(
        &self,
        scope: &str,
        owner: &str,
        in_flight: Duration,
    ) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let key = self.record_key(scope);
        let renewed: i64 = self
            .run("idempotency", async move {
                RENEW
                    .key(key)
                    .arg(owner)
                    .arg(ms(in_flight))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }
}
