//! The emulator over real HTTP: `wdt-client` round trips, the signature vectors, every refusal,
//! faults, concurrency, several accounts, direct stock changes and the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod accounts;
mod binary;
mod direct;
mod faults;
mod refusals;
mod roundtrip;
mod support;
mod vectors;
