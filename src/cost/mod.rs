//! What an observation cost: Langfuse-compatible model matching, usage resolution, pricing
//! tiers, cost computation and the tokenizer fallback (spec §6).
//!
//! Owns: model definitions ([`ModelDef`], their Langfuse JSON shapes and validation), the
//! built-in price list (`data/model-prices.json`, embedded), the [`PriceBook`] that matches a
//! raw model string to a model (project models first, then config-file models, then built-ins)
//! and prices an observation with [`PriceBook::apply`], the [`LivePrices`] the writer prices
//! with (swapped when a model is created or deleted), and the parsing of client-reported
//! usage/cost ([`usage`]).
//!
//! Must not touch: storage or HTTP. It never reads or writes redb, never answers a request,
//! never logs per observation, and reads the clock only to stamp a new model's `createdAt`.
//! The store calls `apply` on every merged observation and persists the result; the API layer
//! parses and lists models through this module but owns status codes and response envelopes.
//!
//! Rules that are easy to get wrong, all from Langfuse:
//! * Client-supplied cost wins over computed cost, key for key; its `total` is computed only
//!   from `input` + `output` when those are the only keys.
//! * Prices apply per *exact* usage key (`input_cached_tokens` is not `cache_read_input_tokens`);
//!   the price file lists synonyms so whichever key an instrumentation sends is priced.
//! * Tokenizing happens only when a model matched and neither usage nor cost was reported and
//!   the level is not `ERROR`; counts are marked `usage_estimated`.
//! * No match means no pricing and no computed cost — never a price of zero.
//!
//! Where we differ from Langfuse on purpose: a project model always beats a built-in one
//! (Langfuse issue #2491); amounts are summed as exact decimals and rounded once (Langfuse adds
//! floats, a last-digit difference at most); tier attributes come from the merged observation
//! rather than from the last event that carried usage.

mod amount;
mod book;
mod compute;
mod langfuse_json;
mod live;
mod model;
mod tokenize;
pub mod usage;

#[cfg(test)]
mod tests;

pub use book::PriceBook;
pub use live::LivePrices;
pub use model::{
    AttributeSource, CompareOp, ModelDef, PricingTier, TOKENIZERS, TierCondition, UNITS,
};

/// Why a model definition, price file or usage report was refused.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("built-in price file is not valid json: {0}")]
    BuiltinFile(String),
    #[error("built-in model #{index}: {source}")]
    BuiltinModel {
        index: usize,
        #[source]
        source: Box<CostError>,
    },
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("invalid `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("`{pattern}` is not a valid regex: {reason}")]
    InvalidRegex { pattern: String, reason: String },
    #[error(
        "give either flat prices (inputPrice/outputPrice/totalPrice) or pricingTiers, not both"
    )]
    FlatPricesAndTiers,
    #[error("give either flat prices (inputPrice/outputPrice/totalPrice) or pricingTiers")]
    NoPrices,
    #[error("totalPrice must be null when inputPrice or outputPrice is set")]
    TotalPriceWithInputOutput,
    #[error("invalid pricing tiers: {0}")]
    InvalidTiers(String),
    #[error("invalid usage: {0}")]
    InvalidUsage(String),
}

impl crate::store::Pricer for PriceBook {
    fn apply(
        &self,
        project: &str,
        obs: &mut crate::record::ObservationRecord,
        input: Option<&serde_json::Value>,
        output: Option<&serde_json::Value>,
    ) {
        PriceBook::apply(self, project, obs, input, output);
    }
}
