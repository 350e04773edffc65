//! Sightline: an LLM-observability appliance in one binary. See ARCHITECTURE.md for the map.
#![recursion_limit = "256"]

pub mod analytics;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod cost;
pub mod export;
pub mod forward;
pub mod ingest;
pub mod otel;
pub mod record;
pub mod routes;
pub mod search;
pub mod serve;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod web;
