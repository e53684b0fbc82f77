//! Integration tests of `wdt-client` and `wdt-call` against mock vendors on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod cli;
mod decode;
mod errors;
mod guard;
mod props;
mod support;
mod wire;
