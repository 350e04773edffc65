//! Sightline: an LLM-observability appliance in one binary. See ARCHITECTURE.md for the map.

pub mod auth;
pub mod config;
pub mod cost;
pub mod ingest;
pub mod otel;
pub mod record;
pub mod store;
pub mod time;
