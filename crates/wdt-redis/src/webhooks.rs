//! The webhook store of a tenant when replicas share state: its endpoints, and each endpoint's
//! messages (deliveries) with their due index and finished log, under the same rules as the
//! embedded store of `wdt-webhooks` (which calls these). Records are JSON texts written by the
//! caller; the scripts only read their `version` for the checks, and never write JSON.
//!
//! Keys, under the account's prefix (one Cluster slot, so every script may use them all):
//! - `wh:endpoints`: hash, endpoint id → its JSON;
//! - `wh:msg:<endpoint>`: hash, message id → its JSON;
//! - `wh:due:<endpoint>`: sorted set of the pending messages, scored by when they are due (Unix
//!   ms); a claim pushes its messages to the lease's end;
//! - `wh:done:<endpoint>`: sorted set of the finished messages, scored by when they finished,
//!   trimmed to the newest few (with their JSON);
//! - `wh:listing:<endpoint>`: hash, listing → the message of its latest plan.

use std::sync::LazyLock;

use redis::{Script, Value};

use crate::connection::{Shared, Unavailable, int};

static PUT_ENDPOINT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("webhooks/put_endpoint.lua")));
static DELETE_ENDPOINT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("webhooks/delete_endpoint.lua")));
static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("webhooks/enqueue.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("webhooks/claim.lua")));
static UPDATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("webhooks/update.lua")));
static DELIVERIES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("webhooks/deliveries.lua")));

/// The most a claim or a listing reads at once (larger asks are cut to it; the scripts count
/// in Lua numbers).
const MOST: usize = u32::MAX as usize;

/// A message to queue with [`Shared::enqueue_webhooks`].
#[derive(Debug, Clone, Copy)]
pub struct Queue<'a> {
    /// The endpoint's id.
    pub endpoint: &'a str,
    /// The message's id (stored once per endpoint).
    pub id: &'a str,
    /// The message's JSON.
    pub text: &'a str,
    /// The listing whose plan it carries, if any: it becomes the listing's latest message.
    pub listing: Option<i64>,
}

impl Shared {
    /// The key `wh:<kind>:<endpoint>`.
    fn webhook_key(&self, kind: &str, endpoint: &str) -> String {
        self.key("wh", &format!("{kind}:{endpoint}"))
    }

    /// Every endpoint's JSON, by id.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn webhook_endpoints(&self) -> Result<Vec<String>, Unavailable> {
        let mut con = self.con();
        let key = self.key("wh", "endpoints");
        let value: Value = self
            .run("webhook_endpoints", async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut con).await
            })
            .await?;
        let pairs = match value {
            Value::Map(pairs) => pairs,
            Value::Array(flat) if flat.len() % 2 == 0 => {
                let mut flat = flat.into_iter();
                std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
            }
            _ => return Err(self.garbled("webhook_endpoints")),
        };
        let mut endpoints = pairs
            .into_iter()
            .map(|(id, text)| Some((text_of(id)?, text_of(text)?)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.garbled("webhook_endpoints"))?;
        endpoints.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(endpoints.into_iter().map(|(_, text)| text).collect())
    }

    /// Stores endpoint `id` as `text` if the stored one's `version` is `expected` (`None`: none
    /// is stored): whether it was stored.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn put_webhook_endpoint(
        &self,
        id: &str,
        text: &str,
        expected: Option<u64>,
    ) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let mut invocation = PUT_ENDPOINT.key(self.key("wh", "endpoints"));
        invocation
            .arg(id)
            .arg(text)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default());
        let stored: Value = self
            .run("webhook_put_endpoint", async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        self.flag("webhook_put_endpoint", &stored)
    }

    /// Removes endpoint `id` with all its messages and indexes: whether it was there.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let mut invocation = DELETE_ENDPOINT.key(self.key("wh", "endpoints"));
        for kind in ["msg", "due", "done", "listing"] {
            invocation.key(self.webhook_key(kind, id));
        }
        invocation.arg(id);
        let existed: Value = self
            .run("webhook_delete_endpoint", async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        self.flag("webhook_delete_endpoint", &existed)
    }

    /// Queues `items`, each due at `now_ms`, in one step. A message whose id its endpoint
    /// already has changes nothing. A new one with a listing becomes the listing's latest:
    /// when that was another message, `(endpoint, that message's id)` is returned, for the
    /// caller to supersede it.
    ///
    /// # Errors
    /// Redis is unavailable (some or all may have been queued).
    pub async fn enqueue_webhooks(
        &self,
        items: &[Queue<'_>],
        now_ms: i64,
    ) -> Result<Vec<(String, String)>, Unavailable> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con();
        let mut invocation = ENQUEUE.arg(now_ms);
        for item in items {
            invocation
                .key(self.webhook_key("msg", item.endpoint))
                .key(self.webhook_key("due", item.endpoint))
                .key(self.webhook_key("listing", item.endpoint))
                .arg(item.id)
                .arg(item.text)
                .arg(item.listing.map(|l| l.to_string()).unwrap_or_default());
        }
        let value: Value = self
            .run("webhook_enqueue", async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        let Value::Array(flat) = value else {
            return Err(self.garbled("webhook_enqueue"));
        };
        if flat.len() % 2 != 0 {
            return Err(self.garbled("webhook_enqueue"));
        }
        let mut flat = flat.into_iter();
        let mut replaced = Vec::with_capacity(flat.len() / 2);
        while let (Some(position), Some(older)) = (flat.next(), flat.next()) {
            let item = int(&position)
                .and_then(|p| usize::try_from(p).ok())
                .and_then(|p| items.get(p.checked_sub(1)?));
            let (Some(item), Some(older)) = (item, text_of(older)) else {
                return Err(self.garbled("webhook_enqueue"));
            };
            replaced.push((item.endpoint.to_owned(), older));
        }
        Ok(replaced)
    }

    /// Claims up to `max` messages of `endpoint` due by `now_ms`, soonest due first, pushing
    /// each to `now_ms + lease_ms` in the due index so no claim takes it again before: their
    /// JSON.
    ///
    /// # Errors
    /// Redis is unavailable (the messages may have been claimed).
    pub async fn claim_webhooks(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<String>, Unavailable> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut con = self.con();
        let mut invocation = CLAIM.key(self.webhook_key("msg", endpoint));
        invocation
            .key(self.webhook_key("due", endpoint))
            .arg(now_ms)
            .arg(now_ms.saturating_add(lease_ms))
            .arg(max.min(MOST));
        let value: Value = self
            .run("webhook_claim", async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        self.texts("webhook_claim", value)
    }

    /// Replaces message `id` of `endpoint` with `text` if it is still stored with `version`
    /// `expected`, then places it: due again at `due_at`, and/or finished at `finished_at`
    /// (off the due index, into the finished log; `finished_at` wins when both are given). The
    /// finished log is then cut to the newest `keep` (the older messages are deleted). Whether
    /// it was replaced.
    ///
    /// # Errors
    /// Redis is unavailable (it may have been replaced).
    #[expect(
        clippy::too_many_arguments,
        reason = "the caller's API: one call per replacement"
    )]
    pub async fn update_webhook(
        &self,
        endpoint: &str,
        id: &str,
        text: &str,
        expected: u64,
        due_at: Option<i64>,
        finished_at: Option<i64>,
        keep: usize,
    ) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let mut invocation = UPDATE.key(self.webhook_key("msg", endpoint));
        invocation
            .key(self.webhook_key("due", endpoint))
            .key(self.webhook_key("done", endpoint))
            .arg(id)
            .arg(text)
            .arg(expected)
            .arg(due_at.map(|t| t.to_string()).unwrap_or_default())
            .arg(finished_at.map(|t| t.to_string()).unwrap_or_default())
            .arg(keep);
        let replaced: Value = self
            .run("webhook_update", async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        self.flag("webhook_update", &replaced)
    }

    /// Up to `limit` messages of `endpoint` for its log: the pending ones (soonest due first),
    /// then the finished ones (last finished first). Their JSON.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn webhook_deliveries(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<String>, Unavailable> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut con = self.con();
        let mut invocation = DELIVERIES.key(self.webhook_key("msg", endpoint));
        invocation
            .key(self.webhook_key("due", endpoint))
            .key(self.webhook_key("done", endpoint))
            .arg(limit.min(MOST));
        let value: Value = self
            .run("webhook_deliveries", async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        self.texts("webhook_deliveries", value)
    }

    /// Message `id` of `endpoint`, if stored: its JSON.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn webhook_delivery(
        &self,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<String>, Unavailable> {
        let mut con = self.con();
        let key = self.webhook_key("msg", endpoint);
        let id = id.to_owned();
        let value: Value = self
            .run("webhook_delivery", async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        match value {
            Value::Nil => Ok(None),
            text => text_of(text)
                .map(Some)
                .ok_or_else(|| self.garbled("webhook_delivery")),
        }
    }

    /// A script's answer 1 (yes) or 0 (no).
    fn flag(&self, op: &'static str, value: &Value) -> Result<bool, Unavailable> {
        match int(value) {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err(self.garbled(op)),
        }
    }

    /// A script's array of texts.
    fn texts(&self, op: &'static str, value: Value) -> Result<Vec<String>, Unavailable> {
        let Value::Array(texts) = value else {
            return Err(self.garbled(op));
        };
        texts
            .into_iter()
            .map(text_of)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.garbled(op))
    }
}

/// A reply that is a UTF-8 string.
fn text_of(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}
