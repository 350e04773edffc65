//! Usage resolution, tier selection and cost computation for one observation (spec §6.3–6.5).
//!
//! Pure functions over a compiled model; the price book finds the model and calls these.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::amount::{self, Dec};
use super::model::{AttributeSource, CompareOp, ModelDef};
use super::tokenize::Tokenizer;
use crate::record::{CostMap, Level, ObservationRecord, PricingRef, UsageMap};

/// A model ready for matching and pricing: regexes compiled, prices read as decimals.
#[derive(Debug)]
pub(crate) struct CompiledModel {
    pub(crate) def: ModelDef,
    pub(crate) matcher: Regex,
    /// Non-default tiers, by ascending priority.
    pub(crate) tiers: Vec<CompiledTier>,
    pub(crate) default_tier: Option<CompiledTier>,
    pub(crate) tokenizer: Tokenizer,
}

#[derive(Debug)]
pub(crate) struct CompiledTier {
    /// Index into `def.pricing_tiers`.
    pub(crate) index: usize,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) prices: BTreeMap<String, Dec>,
}

#[derive(Debug)]
pub(crate) enum Condition {
    Usage {
        regex: Regex,
        op: CompareOp,
        value: f64,
    },
    Attribute {
        source: AttributeSource,
        key: String,
        values: Vec<String>,
    },
}

/// Fills `usage_details`, `cost_details`, `pricing` and `usage_estimated` of `obs` from its
/// merged state. `model` is the matched model, if any.
pub(crate) fn price_observation(
    model: Option<&CompiledModel>,
    obs: &mut ObservationRecord,
    input: Option<&Value>,
    output: Option<&Value>,
) {
    let provided_cost: CostMap = obs
        .provided_cost
        .iter()
        .flatten()
        .filter(|(_, c)| c.is_finite() && **c >= 0.0)
        .map(|(k, c)| (k.clone(), *c))
        .collect();
    let provided_usage = obs.provided_usage.as_ref().filter(|u| !u.is_empty());

    obs.usage_estimated = false;
    obs.usage_details = match (model, provided_usage) {
        (Some(m), None) if provided_cost.is_empty() && obs.level != Level::Error => {
            let counted = tokenize(&m.tokenizer, input, output);
            obs.usage_estimated = !counted.is_empty();
            counted
        }
        (_, Some(provided)) => with_total(provided.clone()),
        (_, None) => UsageMap::new(),
    };

    let tier = match model {
        Some(m) if !obs.usage_details.is_empty() => select_tier(
            m,
            &obs.usage_details,
            obs.model_parameters.as_ref(),
            &obs.metadata,
        ),
        _ => None,
    };

    obs.cost_details = if !provided_cost.is_empty() {
        provided_costs(provided_cost)
    } else if let Some(t) = tier {
        computed_costs(t, &obs.usage_details)
    } else {
        CostMap::new()
    };

    obs.pricing = model.map(|m| {
        let default = m.def.default_tier();
        let flat = |k: &str| default.and_then(|t| t.prices.get(k)).copied();
        let chosen = tier.map(|t| &m.def.pricing_tiers[t.index]);
        PricingRef {
            model_id: m.def.id.clone(),
            tier_id: chosen.map(|t| t.id.clone()),
            tier_name: chosen.map(|t| t.name.clone()),
            input_price: flat("input"),
            output_price: flat("output"),
            total_price: flat("total"),
        }
    });
}

/// Provided usage, with `total` = the sum of every key when the client gave none.
fn with_total(mut usage: UsageMap) -> UsageMap {
    if !usage.contains_key("total") {
        let sum = usage.values().fold(0u64, |acc, n| acc.saturating_add(*n));
        usage.insert("total".into(), sum);
    }
    usage
}

/// `{input, output, total}` from the model's tokenizer; keys it could not count are absent.
fn tokenize(tokenizer: &Tokenizer, input: Option<&Value>, output: Option<&Value>) -> UsageMap {
    let mut usage = UsageMap::new();
    if !tokenizer.counts() {
        return usage;
    }
    let n_in = tokenizer.count(input);
    let n_out = tokenizer.count(output);
    if let Some(n) = n_in {
        usage.insert("input".into(), n);
    }
    if let Some(n) = n_out {
        usage.insert("output".into(), n);
    }
    // Langfuse writes a total only when one of the counts is non-zero.
    if n_in.unwrap_or(0) > 0 || n_out.unwrap_or(0) > 0 {
        usage.insert(
            "total".into(),
            n_in.unwrap_or(0).saturating_add(n_out.unwrap_or(0)),
        );
    }
    usage
}

/// The first non-default tier (by priority) whose conditions all hold, else the default tier.
pub(crate) fn select_tier<'m>(
    model: &'m CompiledModel,
    usage: &UsageMap,
    model_parameters: Option<&Map<String, Value>>,
    metadata: &Map<String, Value>,
) -> Option<&'m CompiledTier> {
    model
        .tiers
        .iter()
        .find(|t| {
            !t.conditions.is_empty()
                && t.conditions
                    .iter()
                    .all(|c| c.holds(usage, model_parameters, metadata))
        })
        .or(model.default_tier.as_ref())
}

impl Condition {
    fn holds(
        &self,
        usage: &UsageMap,
        model_parameters: Option<&Map<String, Value>>,
        metadata: &Map<String, Value>,
    ) -> bool {
        match self {
            Condition::Usage { regex, op, value } => {
                let sum = usage
                    .iter()
                    .filter(|(k, _)| regex.is_match(k))
                    .fold(0u64, |acc, (_, n)| acc.saturating_add(*n));
                op.holds(sum as f64, *value)
            }
            Condition::Attribute {
                source,
                key,
                values,
            } => {
                let attrs = match source {
                    AttributeSource::ModelParameters => model_parameters,
                    AttributeSource::Metadata => Some(metadata),
                };
                attrs
                    .and_then(|a| a.get(key))
                    .and_then(attribute_string)
                    .is_some_and(|s| values.contains(&s))
            }
        }
    }
}

/// An attribute as Langfuse compares it: strings as they are, numbers and booleans as
/// JavaScript's `String()` writes them, anything else absent.
fn attribute_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => js_number(f),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// JavaScript's `Number.prototype.toString()` for finite numbers.
fn js_number(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust prints the same shortest digits, positionally, in this range.
        return format!("{f}");
    }
    let e = format!("{f:e}");
    match e.split_once('e') {
        Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
        _ => e,
    }
}

/// Client-supplied costs are authoritative. `total` is the provided total, else
/// `input + output` when those are the only keys, else absent.
fn provided_costs(mut cost: CostMap) -> CostMap {
    if !cost.contains_key("total") && cost.keys().all(|k| k == "input" || k == "output") {
        let total = amount::sum(cost.values().copied());
        cost.insert("total".into(), total);
    }
    cost
}

/// `price × units` for every usage key the tier prices (exact key match), then `total`: the
/// priced `total` usage if any, else the sum of the computed entries.
fn computed_costs(tier: &CompiledTier, usage: &UsageMap) -> CostMap {
    let mut cost = CostMap::new();
    let mut exact_sum = Some(Dec::ZERO);
    let mut float_sum = 0.0;
    let mut priced_total = false;
    for (key, units) in usage {
        let Some(price) = tier.prices.get(key) else {
            continue;
        };
        let exact = price.mul_units(*units);
        // Saturating: an absurd price or unit count must not become an infinite cost, which
        // JSON (and so the store) cannot hold.
        let value = match exact {
            Some(d) => d.to_f64(),
            None => price.to_f64() * *units as f64,
        }
        .min(f64::MAX);
        if key == "total" {
            priced_total = true;
        } else {
            exact_sum = exact_sum.and_then(|s| s.checked_add(exact?));
            float_sum += value;
        }
        cost.insert(key.clone(), value);
    }
    if !priced_total && !cost.is_empty() {
        let total = exact_sum.map_or(float_sum.min(f64::MAX), Dec::to_f64);
        cost.insert("total".into(), total);
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn js_number_strings() {
        assert_eq!(js_number(1.5), "1.5");
        assert_eq!(js_number(100.0), "100");
        assert_eq!(js_number(1e21), "1e+21");
        assert_eq!(js_number(1.5e-7), "1.5e-7");
        assert_eq!(attribute_string(&json!(2)).as_deref(), Some("2"));
        assert_eq!(attribute_string(&json!(true)).as_deref(), Some("true"));
        assert_eq!(attribute_string(&json!(null)), None);
        assert_eq!(attribute_string(&json!(["fast"])), None);
    }

    #[test]
    fn provided_total_rules() {
        let c = |pairs: &[(&str, f64)]| -> CostMap {
            pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
        };
        assert_eq!(
            provided_costs(c(&[("input", 0.1), ("output", 0.2)])),
            c(&[("input", 0.1), ("output", 0.2), ("total", 0.3)])
        );
        assert_eq!(
            provided_costs(c(&[("input", 0.1), ("cache", 0.2)])),
            c(&[("input", 0.1), ("cache", 0.2)]),
            "no total when other keys are present"
        );
        assert_eq!(
            provided_costs(c(&[("input", 0.1), ("total", 5.0)])),
            c(&[("input", 0.1), ("total", 5.0)])
        );
    }
}
