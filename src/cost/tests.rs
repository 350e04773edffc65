//! End-to-end pricing through the built-in book: exact figures from the price file.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;
use crate::record::{
    CostMap, Level, ObservationPatch, ObservationRecord, ObservationType, UsageMap,
};
use crate::time::Timestamp;

fn book() -> &'static PriceBook {
    static BOOK: OnceLock<PriceBook> = OnceLock::new();
    BOOK.get_or_init(|| PriceBook::builtin().expect("built-in price file loads"))
}

fn obs(model: &str) -> ObservationRecord {
    let patch = ObservationPatch::new("o1", ObservationType::Generation);
    let mut o = ObservationRecord::empty(&patch, "t1".into(), Timestamp::from_micros(0));
    o.model = Some(model.into());
    o
}

fn usage(pairs: &[(&str, u64)]) -> UsageMap {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

fn costs(pairs: &[(&str, f64)]) -> CostMap {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

/// Costs equal to 1e-12 relative (every figure below is in fact exact).
fn assert_costs(got: &CostMap, want: &[(&str, f64)]) {
    let want = costs(want);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "cost keys of {got:?}"
    );
    for (k, w) in &want {
        let g = got[k];
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(f64::MIN_POSITIVE),
            "{k}: got {g:e}, want {w:e}"
        );
    }
}

/// Prices `model` with `provided` usage (and model parameters) in project `p`; returns it.
fn check(model: &str, provided: &[(&str, u64)], params: Value) -> ObservationRecord {
    let mut o = obs(model);
    o.provided_usage = Some(usage(provided));
    o.model_parameters = params.as_object().cloned();
    book().apply("p", &mut o, None, None);
    o
}

#[test]
fn price_book_is_shareable_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<PriceBook>();
}

#[test]
fn every_builtin_model_loads_and_matches_its_own_name() {
    let b = book();
    let models = b.models("p");
    assert_eq!(models.len(), 167);
    assert_eq!(
        models.iter().filter(|m| m.pricing_tiers.len() > 1).count(),
        44
    );
    let mut self_matching = 0;
    for m in &models {
        assert!(m.is_builtin());
        assert!(m.match_pattern.starts_with("(?i)"), "{}", m.match_pattern);
        let re = regex::Regex::new(&m.match_pattern).expect("pattern compiles");
        // A few display names differ from what their pattern covers ("claude-3.5-haiku-latest"
        // vs "claude-3-5-haiku-latest"); every name the pattern covers must find its model.
        if re.is_match(&m.model_name) {
            self_matching += 1;
            let found = b.find("p", &m.model_name).map(|f| f.id.as_str());
            assert_eq!(found, Some(m.id.as_str()), "{}", m.model_name);
        }
    }
    assert!(self_matching >= 150, "{self_matching}");
    // Sorted like Langfuse's model list.
    assert!(
        models
            .windows(2)
            .all(|w| w[0].model_name <= w[1].model_name)
    );
}

#[test]
fn gpt_4o_input_and_output() {
    let o = check("gpt-4o", &[("input", 1000), ("output", 500)], json!({}));
    assert_eq!(o.cost_details["total"], 0.0075);
    assert_costs(
        &o.cost_details,
        &[("input", 0.0025), ("output", 0.005), ("total", 0.0075)],
    );
    assert_eq!(
        o.usage_details,
        usage(&[("input", 1000), ("output", 500), ("total", 1500)])
    );
    let p = o.pricing.expect("priced");
    assert_eq!(p.model_id, "b9854a5c92dc496b997d99d20");
    assert_eq!(p.tier_name.as_deref(), Some("Standard"));
    assert_eq!(
        p.tier_id.as_deref(),
        Some("b9854a5c92dc496b997d99d20_tier_default")
    );
    assert_eq!(
        (p.input_price, p.output_price, p.total_price),
        (Some(2.5e-06), Some(1e-05), None)
    );
    assert!(!o.usage_estimated);
}

#[test]
fn cached_tokens_are_priced_by_their_own_key() {
    // Spec §6.5: gpt-4o prices `input_cached_tokens` at 1.25e-06; `total` has no price.
    let o = check(
        "gpt-4o",
        &[
            ("input", 20),
            ("input_cached_tokens", 100),
            ("output", 30),
            ("total", 150),
        ],
        json!({}),
    );
    assert_eq!(o.cost_details["total"], 4.75e-04);
    assert_costs(
        &o.cost_details,
        &[
            ("input", 5e-05),
            ("input_cached_tokens", 1.25e-04),
            ("output", 3e-04),
            ("total", 4.75e-04),
        ],
    );
    // Usage keys are case-sensitive and exact: this one has no price.
    let o = check("gpt-4o", &[("Input_Cached_Tokens", 100)], json!({}));
    assert!(o.cost_details.is_empty(), "{:?}", o.cost_details);
    assert!(o.pricing.is_some());
}

#[test]
fn reasoning_tokens_are_priced() {
    // o3 prices output_reasoning_tokens like output: 8e-06.
    let o = check(
        "openai/o3",
        &[
            ("input", 100),
            ("output", 200),
            ("output_reasoning_tokens", 300),
        ],
        json!({}),
    );
    assert_costs(
        &o.cost_details,
        &[
            ("input", 2e-04),
            ("output", 1.6e-03),
            ("output_reasoning_tokens", 2.4e-03),
            ("total", 4.2e-03),
        ],
    );
    assert_eq!(o.usage_details["total"], 600);
}

#[test]
fn usage_condition_selects_the_large_context_tier() {
    let big = check(
        "gemini-2.5-pro",
        &[("input", 250_000), ("output", 1000)],
        json!({}),
    );
    assert_eq!(
        big.pricing.as_ref().unwrap().tier_name.as_deref(),
        Some("Large Context")
    );
    assert_costs(
        &big.cost_details,
        &[("input", 0.625), ("output", 0.015), ("total", 0.64)],
    );
    // The condition sums every key matching (input|prompt|cached): 150k + 60k > 200k.
    let split = check(
        "gemini-2.5-pro",
        &[("input", 150_000), ("input_cached_tokens", 60_000)],
        json!({}),
    );
    assert_eq!(
        split.pricing.unwrap().tier_name.as_deref(),
        Some("Large Context")
    );
    let small = check("gemini-2.5-pro", &[("input", 100_000)], json!({}));
    assert_eq!(
        small.pricing.unwrap().tier_name.as_deref(),
        Some("Standard")
    );
    assert_costs(&small.cost_details, &[("input", 0.125), ("total", 0.125)]);
}

#[test]
fn attribute_condition_selects_fast_and_flex_tiers() {
    let fast = check(
        "gpt-4o",
        &[("input", 1000), ("output", 500)],
        json!({"service_tier": "priority"}),
    );
    let p = fast.pricing.unwrap();
    assert_eq!(p.tier_name.as_deref(), Some("Fast mode"));
    assert_eq!(
        p.tier_id.as_deref(),
        Some("ba3b2121-9c68-4333-af3b-26f98fbab7ee")
    );
    // The read shape keeps the default tier's unit prices.
    assert_eq!(p.input_price, Some(2.5e-06));
    assert_costs(
        &fast.cost_details,
        &[("input", 0.00425), ("output", 0.0085), ("total", 0.01275)],
    );
    let flex = check("o3", &[("input", 1000)], json!({"service_tier": "flex"}));
    assert_eq!(flex.pricing.unwrap().tier_name.as_deref(), Some("Flex"));
    assert_costs(&flex.cost_details, &[("input", 0.001), ("total", 0.001)]);
    // Values compare as strings, exactly: neither "Flex" nor a list matches.
    for params in [
        json!({"service_tier": "Flex"}),
        json!({"service_tier": ["flex"]}),
    ] {
        let o = check("o3", &[("input", 1000)], params);
        assert_eq!(o.pricing.unwrap().tier_name.as_deref(), Some("Standard"));
    }
    // Both conditions of the first tier hold, so priority 1 wins over Flex (3) and Large (4).
    let both = check(
        "gpt-5.4",
        &[("input", 300_000)],
        json!({"service_tier": "flex"}),
    );
    assert_eq!(
        both.pricing.unwrap().tier_name.as_deref(),
        Some("Flex · Large context (>272K)")
    );
}

#[test]
fn attribute_condition_reads_metadata() {
    let def = ModelDef::from_langfuse_json(&json!({
        "id": "meta", "modelName": "meta-model", "matchPattern": "^meta-model$",
        "pricingTiers": [
            {"name": "Standard", "isDefault": true, "priority": 0, "conditions": [], "prices": {"input": 1.0}},
            {"name": "Gold", "isDefault": false, "priority": 1, "prices": {"input": 2.0},
             "conditions": [{"source": "metadata", "key": "plan", "operator": "in", "values": ["gold", "1"]}]}
        ]
    }))
    .unwrap();
    let b = book().with_project_models(vec![ModelDef {
        project_id: Some("p".into()),
        ..def
    }]);
    let tier = |meta: Value| {
        let mut o = obs("meta-model");
        o.provided_usage = Some(usage(&[("input", 3)]));
        o.metadata = meta.as_object().cloned().unwrap();
        b.apply("p", &mut o, None, None);
        (
            o.pricing.unwrap().tier_name.unwrap(),
            o.cost_details["total"],
        )
    };
    assert_eq!(tier(json!({"plan": "gold"})), ("Gold".into(), 6.0));
    assert_eq!(tier(json!({"plan": 1})), ("Gold".into(), 6.0));
    assert_eq!(tier(json!({"plan": "silver"})), ("Standard".into(), 3.0));
    assert_eq!(tier(json!({})), ("Standard".into(), 3.0));
}

#[test]
fn client_supplied_cost_wins() {
    let mut o = obs("gpt-4o");
    o.provided_usage = Some(usage(&[("input", 1000), ("output", 500)]));
    o.provided_cost = Some(costs(&[("input", 1.0), ("output", 2.0)]));
    book().apply("p", &mut o, None, None);
    assert_eq!(
        o.cost_details,
        costs(&[("input", 1.0), ("output", 2.0), ("total", 3.0)])
    );
    // The model and tier are still recorded, as Langfuse does.
    assert_eq!(o.pricing.unwrap().tier_name.as_deref(), Some("Standard"));

    // A provided total is kept as given; other keys never get a computed total.
    let mut o = obs("gpt-4o");
    o.provided_cost = Some(costs(&[("input", 1.0), ("cache", 0.5)]));
    book().apply("p", &mut o, Some(&json!("hello world")), None);
    assert_eq!(o.cost_details, costs(&[("cache", 0.5), ("input", 1.0)]));
    assert!(
        o.usage_details.is_empty(),
        "no tokenizing when cost is given"
    );
}

#[test]
fn negative_and_nan_amounts_are_never_stored() {
    let mut o = obs("gpt-4o");
    o.provided_usage = Some(usage(&[("input", 1000)]));
    o.provided_cost = Some(costs(&[("input", -1.0), ("output", f64::NAN)]));
    book().apply("p", &mut o, None, None);
    // Nothing usable was provided, so the cost is computed.
    assert_costs(&o.cost_details, &[("input", 0.0025), ("total", 0.0025)]);
    assert!(o.cost_details.values().all(|c| c.is_finite() && *c >= 0.0));
}

#[test]
fn project_model_beats_an_overlapping_builtin() {
    // Regression guard for Langfuse issue #2491: same pattern as the built-in gpt-4o.
    let custom = ModelDef::from_langfuse_json(&json!({
        "id": "custom-4o", "modelName": "gpt-4o", "matchPattern": "(?i)^(openai/)?(gpt-4o)$",
        "unit": "TOKENS", "inputPrice": 1e-06, "outputPrice": 2e-06
    }))
    .unwrap();
    let b = book().with_project_models(vec![ModelDef {
        project_id: Some("mine".into()),
        ..custom
    }]);
    let price = |project: &str| {
        let mut o = obs("gpt-4o");
        o.provided_usage = Some(usage(&[("input", 1000), ("output", 500)]));
        b.apply(project, &mut o, None, None);
        (o.pricing.unwrap().model_id, o.cost_details["total"])
    };
    assert_eq!(price("mine"), ("custom-4o".into(), 0.002));
    assert_eq!(price("other"), ("b9854a5c92dc496b997d99d20".into(), 0.0075));
    // Project models list first among same-named ones, and are found by id.
    assert_eq!(b.find("mine", "openai/GPT-4o").unwrap().id, "custom-4o");
    assert_eq!(b.get("mine", "custom-4o").unwrap().model_name, "gpt-4o");
    assert!(b.get("other", "custom-4o").is_none());
    assert_eq!(b.models("mine").len(), 168);
    // Built-ins still answer for the project where its own model does not match.
    assert_eq!(b.find("mine", "o3").unwrap().model_name, "o3");
}

#[test]
fn newest_start_date_wins_then_newest_definition() {
    let def = |id: &str, start: Option<&str>, created: &str| {
        let mut d = ModelDef::from_langfuse_json(&json!({
            "id": id, "modelName": id, "matchPattern": "^acme-", "totalPrice": 1.0,
            "startDate": start, "createdAt": created
        }))
        .unwrap();
        d.project_id = Some("p".into());
        d
    };
    let b = book().with_project_models(vec![
        def("undated-new", None, "2025-06-01T00:00:00Z"),
        def("old", Some("2024-01-01T00:00:00Z"), "2025-01-01T00:00:00Z"),
        def("new", Some("2025-01-01T00:00:00Z"), "2024-01-01T00:00:00Z"),
    ]);
    assert_eq!(b.find("p", "acme-1").unwrap().id, "new");
    let b = book().with_project_models(vec![
        def("first", None, "2025-01-01T00:00:00Z"),
        def("second", None, "2025-02-01T00:00:00Z"),
    ]);
    assert_eq!(b.find("p", "acme-1").unwrap().id, "second");
}

#[test]
fn patterns_are_case_sensitive_unless_they_say_otherwise() {
    let strict = ModelDef::from_langfuse_json(&json!({
        "id": "strict", "modelName": "My-Model", "matchPattern": "^My-Model$", "inputPrice": 1.0
    }))
    .unwrap();
    let b = book().with_project_models(vec![ModelDef {
        project_id: Some("p".into()),
        ..strict
    }]);
    assert_eq!(
        b.find("p", "My-Model").map(|m| m.id.as_str()),
        Some("strict")
    );
    assert!(b.find("p", "my-model").is_none());
    // Built-in patterns carry (?i).
    assert_eq!(b.find("p", "GPT-4O").unwrap().model_name, "gpt-4o");
    // Matching is a search, as Postgres `~`: built-ins anchor themselves, so no prefix match.
    assert!(b.find("p", "gpt-4o-unknown-variant").is_none());
}

#[test]
fn unknown_model_gets_no_pricing_and_no_cost() {
    let o = check("my-own-llm", &[("input", 1000), ("output", 500)], json!({}));
    assert_eq!(o.pricing, None);
    assert!(o.cost_details.is_empty(), "never $0: {:?}", o.cost_details);
    assert_eq!(
        o.usage_details,
        usage(&[("input", 1000), ("output", 500), ("total", 1500)])
    );
    // No model at all, or an empty one: the same.
    let mut o = obs("");
    o.provided_usage = Some(usage(&[("input", 1)]));
    book().apply("p", &mut o, Some(&json!("hello")), None);
    assert_eq!(o.pricing, None);
    assert!(o.cost_details.is_empty());
    assert!(!o.usage_estimated);
}

#[test]
fn tokenizer_fallback_counts_when_nothing_was_reported() {
    let mut o = obs("gpt-4o");
    let (input, output) = (json!("hello world"), json!("hello world"));
    book().apply("p", &mut o, Some(&input), Some(&output));
    assert!(o.usage_estimated);
    assert_eq!(
        o.usage_details,
        usage(&[("input", 2), ("output", 2), ("total", 4)])
    );
    // 2 × 2.5e-06 + 2 × 1e-05
    assert_costs(
        &o.cost_details,
        &[("input", 5e-06), ("output", 2e-05), ("total", 2.5e-05)],
    );

    // Chat messages on gpt-4 (cl100k_base, 3 per message, 1 per name): OpenAI's cookbook
    // conversation is 129 prompt tokens.
    let messages = json!([
        {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
    ]);
    let mut o = obs("gpt-4");
    book().apply("p", &mut o, Some(&messages), None);
    assert_eq!(o.usage_details, usage(&[("input", 129), ("total", 129)]));
    assert_costs(&o.cost_details, &[("input", 3.87e-03), ("total", 3.87e-03)]);
    // gpt-4o-mini counts with o200k_base: 124.
    let mut o = obs("gpt-4o-mini");
    book().apply("p", &mut o, Some(&messages), None);
    assert_eq!(o.usage_details["input"], 124);
}

#[test]
fn tokenizer_fallback_is_skipped_when_it_must_be() {
    let input = json!("hello world");
    // ERROR level: no counting, so no tier and no cost, but the model is recorded.
    let mut o = obs("gpt-4o");
    o.level = Level::Error;
    book().apply("p", &mut o, Some(&input), None);
    assert!(o.usage_details.is_empty() && o.cost_details.is_empty());
    let p = o.pricing.unwrap();
    assert_eq!(
        (p.model_id.as_str(), p.tier_id),
        ("b9854a5c92dc496b997d99d20", None)
    );
    // Claude models have no offline tokenizer.
    let mut o = obs("claude-opus-4-8");
    book().apply("p", &mut o, Some(&input), None);
    assert!(o.usage_details.is_empty() && !o.usage_estimated);
    // Reported usage is never replaced by a count.
    let mut o = obs("gpt-4o");
    o.provided_usage = Some(usage(&[("output", 7)]));
    book().apply("p", &mut o, Some(&input), None);
    assert_eq!(o.usage_details, usage(&[("output", 7), ("total", 7)]));
    assert!(!o.usage_estimated);
}

#[test]
fn apply_replaces_what_an_earlier_call_wrote() {
    let mut o = obs("gpt-4o");
    book().apply("p", &mut o, Some(&json!("hello world")), None);
    assert!(o.usage_estimated);
    o.provided_usage = Some(usage(&[("input", 1000)]));
    book().apply("p", &mut o, Some(&json!("hello world")), None);
    assert!(!o.usage_estimated);
    assert_eq!(o.usage_details, usage(&[("input", 1000), ("total", 1000)]));
    o.model = Some("nothing-like-it".into());
    book().apply("p", &mut o, None, None);
    assert_eq!(o.pricing, None);
    assert!(o.cost_details.is_empty());
}

#[test]
fn wire_usage_feeds_apply() {
    // The spec's §2.3 event, end to end.
    let provided = usage::from_event_body(
        None,
        Some(
            &json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                     "prompt_tokens_details": {"cached_tokens": 100}}),
        ),
        None,
    )
    .unwrap();
    let mut o = obs("gpt-4o");
    o.provided_usage = provided.usage;
    book().apply("p", &mut o, None, None);
    assert_eq!(o.cost_details["total"], 4.75e-04);
}

/// Not a timed assertion: `cargo test cost::tests::apply_speed -- --nocapture` prints it.
#[test]
fn apply_speed() {
    let b = book();
    let mut o = obs("gpt-4o");
    o.provided_usage = Some(usage(&[
        ("input", 20),
        ("input_cached_tokens", 100),
        ("output", 30),
        ("total", 150),
    ]));
    o.model_parameters = json!({"temperature": 0.2}).as_object().cloned();
    b.apply("p", &mut o, None, None); // warm the match cache
    let n = 20_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        b.apply("p", &mut o, None, None);
    }
    let per = start.elapsed() / n;
    assert_eq!(o.cost_details["total"], 4.75e-04);
    println!("apply (cached gpt-4o, 4 usage keys): {per:?} per call");
}
