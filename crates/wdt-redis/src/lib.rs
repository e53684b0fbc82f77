//! Shared state for several wdt-gateway replicas, on Redis or Valkey.
//!
//! One replica needs none of this: moka and the in-process guard do everything. With several,
//! each would call the vendor for the same miss, spend the account's quota as if it were alone,
//! write twice when a retry lands elsewhere and keep stale stock after a write on another
//! replica. [`Shared`] holds what they must agree on:
//!
//! - the **L2 cache** behind each replica's moka, with a lease per key so concurrent misses on
//!   all replicas make one vendor call (a lease whose holder dies expires and another replica
//!   takes over), and a record of each key's last write so a load that overlapped a write is
//!   never stored;
//! - **invalidation**: a write drops the entries in Redis and tells every replica (pub/sub);
//! - the **vendor quota** per method over any sliding minute, and the back-off after the vendor
//!   throttled, in Lua scripts on the server's clock;
//! - **idempotency records** and **client rate limits** (GCRA);
//! - the **change feed**: one poller per account under a lease, its cursor, and its polls
//!   handed to every replica;
//! - the **webhook store** ([`webhooks`]): endpoints and their deliveries, claimed under a
//!   lease so two replicas never send the same attempt.
//!
//! Every operation is bounded by a short timeout. When Redis fails, each returns
//! [`Unavailable`] and the callers fall back to local behaviour; the gateway reconnects by
//! itself, clears what it may have missed (pub/sub is lossy) and replays the invalidations it
//! could not send. Keys live under `wdt:v1:{<namespace>}:` (a namespace per vendor account): the
//! version changes with the layout of what is stored, and the hash tag keeps each account's
//! keys in one slot.
//!
//! A [`Shared`] is the view of one namespace over a connection. [`Shared::connect`] opens the
//! connection (with its watcher and ONE pattern subscription for every namespace) and returns
//! the view of [`Settings::namespace`]; [`Shared::scoped`] gives the view of another namespace
//! over the same connection, so one process can serve many accounts (tenants) without a
//! connection, task or subscription each. Views share the connection's health, timeouts, lease
//! and replica count, and nothing else: keys, events and held invalidations are per namespace.
//!
//! The source has one module per concern, each Lua script in the folder of its module:
//! `connection` (settings, health, how every command runs, the views), `events` (the pub/sub
//! channels, the subscription and the routing of messages to views),
//! `cache` (the L2 cache, and `cache/invalidation` for writes), `quota`, `idempotency`,
//! `limits`, `feed` and `webhooks`.

mod cache;
mod connection;
mod events;
mod feed;
mod idempotency;
mod limits;
mod quota;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhooks;

pub use cache::{Fetch, Peeked, Stored};
pub use connection::{BadUrl, LAYOUT_VERSION, Settings, Shared, Unavailable, check_url, token};
pub use events::Event;
pub use idempotency::{Begin, Replay};
pub use limits::Allowance;
pub use quota::Reservation;
