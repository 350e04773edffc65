//! OTLP captures from today's clients (Langfuse Python 5.x, Langfuse JS 5.x, LiteLLM's
//! `langfuse_otel`, plain OpenTelemetry), replayed byte for byte — protobuf and JSON, gzip,
//! chunked — then checked against each set's manifest through the read API.

mod common;

use common::{FixtureSet, Server, check_manifest};

fn replay_and_check(set_name: &str) {
    let server = Server::start();
    let set = FixtureSet::load(set_name);
    set.replay(&server);
    check_manifest(&server, &set.manifest);
}

#[test]
fn langfuse_python_5_0_4() {
    replay_and_check("langfuse-python-5.0.4");
}

#[test]
fn langfuse_js_5_11_1() {
    replay_and_check("langfuse-js-5.11.1");
}

#[test]
fn litellm_1_80_17_langfuse_otel() {
    replay_and_check("litellm-1.80.17-langfuse-otel");
}

#[test]
fn opentelemetry_python_1_45_2() {
    replay_and_check("opentelemetry-python-1.45.2");
}

#[test]
fn langfuse_python_5_retried_exports_and_early_scores_are_stored_once() {
    // The exporter re-sent identical bodies after 503s, and the scores arrived before the spans.
    replay_and_check("langfuse-python-5.0.4-retry-503");
}
