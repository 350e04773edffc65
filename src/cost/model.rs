//! Model definitions and pricing tiers: the data a price book is built from.
//!
//! Their Langfuse JSON shapes (parsing, validation, the API object) live in `langfuse_json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CostError;
use crate::time::Timestamp;

/// Units a model may be priced in (`unit` of Langfuse's model API). Informational: matching and
/// pricing never look at it.
pub const UNITS: [&str; 6] = [
    "TOKENS",
    "CHARACTERS",
    "MILLISECONDS",
    "SECONDS",
    "REQUESTS",
    "IMAGES",
];

/// Tokenizers Langfuse knows by name.
pub const TOKENIZERS: [&str; 2] = ["openai", "claude"];

/// A model definition: which raw model strings it covers and what their usage costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDef {
    pub id: String,
    pub model_name: String,
    /// Regex tested (unanchored) against the observation's raw model string; case-sensitive
    /// unless the pattern says `(?i)`.
    pub match_pattern: String,
    /// Orders candidates only (newest first); never compared with the observation's time.
    pub start_date: Option<Timestamp>,
    pub unit: Option<String>,
    pub tokenizer_id: Option<String>,
    pub tokenizer_config: Option<Value>,
    pub pricing_tiers: Vec<PricingTier>,
    /// `None` for built-in (Langfuse-managed) models and site-wide config models.
    pub project_id: Option<String>,
    /// Defined in the config file (`[[models]]`): never stored, never deletable through the API.
    #[serde(default)]
    pub from_config: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One set of prices, selected by its conditions (or the default tier when none match).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricingTier {
    pub id: String,
    pub name: String,
    pub is_default: bool,
    /// Lower is tried first; unique within a model; the default tier has 0.
    pub priority: i32,
    /// All must hold (AND). A non-default tier without conditions never matches.
    pub conditions: Vec<TierCondition>,
    /// USD per unit, by exact usage key (`input`, `output`, `input_cached_tokens`, ...).
    pub prices: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TierCondition {
    /// Sum of the usage values whose key matches `pattern` (unanchored), compared with `value`.
    Usage {
        pattern: String,
        op: CompareOp,
        value: f64,
        case_sensitive: bool,
    },
    /// The top-level `key` of model parameters or metadata, as a string, is one of `values`.
    Attribute {
        source: AttributeSource,
        key: String,
        values: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl CompareOp {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Eq => "eq",
            Self::Neq => "neq",
        }
    }

    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            Self::Gt => lhs > rhs,
            Self::Gte => lhs >= rhs,
            Self::Lt => lhs < rhs,
            Self::Lte => lhs <= rhs,
            Self::Eq => lhs == rhs,
            Self::Neq => lhs != rhs,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeSource {
    ModelParameters,
    Metadata,
}

impl AttributeSource {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "model_parameters" => Some(Self::ModelParameters),
            "metadata" => Some(Self::Metadata),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelParameters => "model_parameters",
            Self::Metadata => "metadata",
        }
    }
}

impl ModelDef {
    /// The tier used when no other tier's conditions hold.
    pub fn default_tier(&self) -> Option<&PricingTier> {
        self.pricing_tiers.iter().find(|t| t.is_default)
    }

    /// Whether this is a built-in (Langfuse-managed) model.
    pub fn is_builtin(&self) -> bool {
        self.project_id.is_none() && !self.from_config
    }
}

/// Compiles `pattern` as matching does, to reject what could never match.
pub(crate) fn check_regex(
    pattern: &str,
    case_insensitive: bool,
) -> Result<regex::Regex, CostError> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| CostError::InvalidRegex {
            pattern: pattern.to_string(),
            reason: first_line(&e.to_string()),
        })
}

fn first_line(s: &str) -> String {
    // regex errors are multi-line with a caret diagram; the last line says what is wrong.
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}
