//! The CSV form of an export: one row per observation with its trace's columns, RFC 4180
//! quoting (a field with a comma, quote or line break is quoted, quotes doubled).

use std::io::Write;

use crate::record::{ObservationRecord, TraceRecord};

pub const HEADER: [&str; 16] = [
    "id",
    "trace_id",
    "trace_name",
    "name",
    "type",
    "start_time",
    "end_time",
    "model",
    "input_tokens",
    "output_tokens",
    "total_cost",
    "user_id",
    "session_id",
    "environment",
    "level",
    "parent_observation_id",
];

fn field(out: &mut dyn Write, value: &str) -> std::io::Result<()> {
    if value.contains([',', '"', '\n', '\r']) {
        write!(out, "\"{}\"", value.replace('"', "\"\""))
    } else {
        out.write_all(value.as_bytes())
    }
}

pub fn row(out: &mut dyn Write, fields: &[String]) -> std::io::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        field(out, f)?;
    }
    // CRLF, as RFC 4180 has it; every CSV reader accepts it.
    out.write_all(b"\r\n")
}

/// Usage units whose key names the side, as the read API sums them (`input_cached_tokens`
/// counts as input).
fn units(o: &ObservationRecord, side: &str) -> u64 {
    o.usage_details
        .iter()
        .filter(|(k, _)| k.contains(side))
        .map(|(_, v)| *v)
        .sum()
}

/// The row of one observation; `trace` is absent when the observation's trace was never sent.
pub fn observation_row(o: &ObservationRecord, trace: Option<&TraceRecord>) -> Vec<String> {
    let opt = |v: Option<&String>| v.cloned().unwrap_or_default();
    vec![
        o.id.clone(),
        o.trace_id.clone(),
        opt(trace.and_then(|t| t.name.as_ref())),
        opt(o.name.as_ref()),
        o.kind.as_str().to_string(),
        o.start_time.to_iso_micros(),
        o.end_time.map(|t| t.to_iso_micros()).unwrap_or_default(),
        opt(o.model.as_ref()),
        units(o, "input").to_string(),
        units(o, "output").to_string(),
        o.cost_details
            .get("total")
            .map(|c| c.to_string())
            .unwrap_or_default(),
        opt(trace.and_then(|t| t.user_id.as_ref())),
        opt(trace.and_then(|t| t.session_id.as_ref())),
        o.environment.clone(),
        o.level.as_str().to_string(),
        opt(o.parent_observation_id.as_ref()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_quoting() {
        let mut out = Vec::new();
        row(
            &mut out,
            &[
                "plain".into(),
                "a,b".into(),
                "say \"hi\"".into(),
                "two\nlines".into(),
                String::new(),
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }
}
