//! Sightline: an LLM-observability appliance in one binary. See ARCHITECTURE.md for the map.

pub mod cost;
pub mod record;
pub mod time;
