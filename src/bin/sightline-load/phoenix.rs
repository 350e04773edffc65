//! Reading counts back from Arize Phoenix (the comparison server): its GraphQL API's span count
//! of one project. Phoenix files OTLP spans under the resource's `openinference.project.name`.

use anyhow::{Context as _, bail};
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// Spans Phoenix has stored in `project` (0 while the project does not exist yet).
pub fn span_count(http: &Client, base: &str, project: &str) -> anyhow::Result<u64> {
    let query = "{ projects(first: 1000) { edges { node { name recordCount } } } }";
    let resp = http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .context("POST /graphql")?;
    let status = resp.status();
    let v: Value = resp.json().context("GraphQL answer is not JSON")?;
    if !status.is_success() || v.get("errors").is_some_and(|e| !e.is_null()) {
        bail!("Phoenix GraphQL: HTTP {status}: {v}");
    }
    Ok(v["data"]["projects"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["node"]["name"] == project)
        .and_then(|e| e["node"]["recordCount"].as_u64())
        .unwrap_or(0))
}
