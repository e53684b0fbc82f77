//! End to end: the real gateway and the real emulator over loopback HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod auth;
mod browser;
mod caching;
mod contract;
mod edge;
mod errors;
mod graphiql;
mod graphql_http;
mod mutations;
mod production;
mod queries;
mod rest;
mod subscriptions;
mod trust;
