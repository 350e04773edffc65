//! Sightline: an LLM-observability appliance in one binary. See ARCHITECTURE.md for the map.
#![recursion_limit = "256"]

pub mod analytics;
pub mod api;
pub mod auth;
pub mod background;
pub mod cli;
pub mod config;
pub mod cost;
pub mod eval;
pub mod export;
pub mod forward;
pub mod ingest;
pub mod otel;
pub mod prompt;
pub mod record;
pub mod retention;
pub mod routes;
pub mod score_config;
pub mod search;
pub mod serve;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod web;
