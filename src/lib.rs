//! Sightline: an LLM-observability appliance in one binary. See ARCHITECTURE.md for the map.

pub mod otel;
pub mod record;
pub mod time;
