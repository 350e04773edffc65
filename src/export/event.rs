//! Stored records back into Langfuse ingestion events (`trace-create`, `<type>-create`,
//! `score-create`): the one mapping that export, import and forward all use.
//!
//! An event carries a record's whole current state, so applying it with Langfuse's merge rules
//! (here or in Langfuse) reproduces the record: fields that can be cleared are sent as explicit
//! `null` when empty, so a newer state also clears what an older one set. The envelope time is
//! the record's newest event time, so a newer state wins over an older one and re-sending the
//! same state changes nothing. Event ids are derived from (record, last update), so the same
//! state always gets the same id and replays are recognisable as such.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::record::{ObservationRecord, ScoreRecord, ScoreTarget, ScoreValue, TraceRecord};
use crate::store::Io;
use crate::time::Timestamp;

/// A deterministic, UUID-shaped event id: hex SHA-256 of the parts, first 16 bytes.
fn event_id(kind: &str, project: &str, id: &str, version: Timestamp) -> String {
    let mut h = Sha256::new();
    for part in [kind, project, id, &version.micros().to_string()] {
        h.update(part.as_bytes());
        // A separator no id contains keeps ("a","bc") and ("ab","c") apart.
        h.update([0u8]);
    }
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn envelope(event_type: String, id: String, at: Timestamp, body: Map<String, Value>) -> Value {
    json!({"id": id, "type": event_type, "timestamp": at.to_iso_micros(), "body": body})
}

/// Inserts `value` when present; an absent field changes nothing on the receiving side.
fn put<T: serde::Serialize>(body: &mut Map<String, Value>, key: &str, value: &Option<T>) {
    if let Some(v) = value {
        body.insert(key.into(), json!(v));
    }
}

/// Always inserts: `null` clears the field where Langfuse lets a `null` clear it.
fn put_clearable(body: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    body.insert(key.into(), json!(value));
}

fn put_io(body: &mut Map<String, Value>, io: &Io) {
    put(body, "input", &io.input);
    put(body, "output", &io.output);
}

fn put_metadata(body: &mut Map<String, Value>, metadata: &Map<String, Value>) {
    if !metadata.is_empty() {
        body.insert("metadata".into(), Value::Object(metadata.clone()));
    }
}

/// `trace-create` with the trace's whole state.
pub fn trace(project: &str, t: &TraceRecord, io: &Io) -> Value {
    let mut b = Map::new();
    b.insert("id".into(), json!(t.id));
    b.insert("timestamp".into(), json!(t.timestamp.to_iso_micros()));
    put_clearable(&mut b, "name", &t.name);
    put_clearable(&mut b, "userId", &t.user_id);
    put_clearable(&mut b, "sessionId", &t.session_id);
    put_clearable(&mut b, "release", &t.release);
    put_clearable(&mut b, "version", &t.version);
    put_io(&mut b, io);
    put_metadata(&mut b, &t.metadata);
    if !t.tags.is_empty() {
        b.insert("tags".into(), json!(t.tags));
    }
    b.insert("public".into(), json!(t.public));
    b.insert("environment".into(), json!(t.environment));
    envelope(
        "trace-create".into(),
        event_id("trace", project, &t.id, t.updated_at),
        t.last_event,
        b,
    )
}

/// `<type>-create` (e.g. `generation-create`, `tool-create`) with the observation's state.
///
/// Usage and cost are sent as the client reported them, not as resolved: the receiver prices
/// (and, where nothing was reported, counts tokens) by the same rules, so it arrives at the same
/// numbers while still knowing which were reported and which computed or estimated.
pub fn observation(project: &str, o: &ObservationRecord, io: &Io) -> Value {
    let mut b = Map::new();
    b.insert("id".into(), json!(o.id));
    b.insert("traceId".into(), json!(o.trace_id));
    put(&mut b, "parentObservationId", &o.parent_observation_id);
    put_clearable(&mut b, "name", &o.name);
    b.insert("startTime".into(), json!(o.start_time.to_iso_micros()));
    put(&mut b, "endTime", &o.end_time.map(Timestamp::to_iso_micros));
    put(
        &mut b,
        "completionStartTime",
        &o.completion_start_time.map(Timestamp::to_iso_micros),
    );
    put_io(&mut b, io);
    put_metadata(&mut b, &o.metadata);
    b.insert("level".into(), json!(o.level.as_str()));
    put(&mut b, "statusMessage", &o.status_message);
    put(&mut b, "version", &o.version);
    b.insert("environment".into(), json!(o.environment));
    put_clearable(&mut b, "model", &o.model);
    put(&mut b, "modelParameters", &o.model_parameters);
    put(&mut b, "usageDetails", &o.provided_usage);
    put(&mut b, "costDetails", &o.provided_cost);
    put(&mut b, "promptName", &o.prompt_name);
    put(&mut b, "promptVersion", &o.prompt_version);
    envelope(
        format!("{}-create", o.kind.as_str().to_ascii_lowercase()),
        event_id("observation", project, &o.id, o.updated_at),
        o.last_event,
        b,
    )
}

/// `score-create` with the score's state. Booleans go as 0/1, which Langfuse requires.
pub fn score(project: &str, s: &ScoreRecord) -> Value {
    let mut b = Map::new();
    b.insert("id".into(), json!(s.id));
    match &s.target {
        ScoreTarget::Trace {
            trace_id,
            observation_id,
        } => {
            b.insert("traceId".into(), json!(trace_id));
            put(&mut b, "observationId", observation_id);
        }
        ScoreTarget::Session { session_id } => {
            b.insert("sessionId".into(), json!(session_id));
        }
        ScoreTarget::DatasetRun { dataset_run_id } => {
            b.insert("datasetRunId".into(), json!(dataset_run_id));
        }
    }
    b.insert("name".into(), json!(s.name));
    let value = match &s.value {
        ScoreValue::Numeric(v) => json!(v),
        ScoreValue::Boolean(v) => json!(if *v { 1 } else { 0 }),
        ScoreValue::Categorical { label, .. } => json!(label),
        ScoreValue::Text(v) | ScoreValue::Correction(v) => json!(v),
    };
    b.insert("value".into(), value);
    b.insert("dataType".into(), json!(s.value.data_type().as_str()));
    b.insert("source".into(), json!(s.source.as_str()));
    put(&mut b, "comment", &s.comment);
    if s.metadata.as_object().is_some_and(|m| !m.is_empty()) {
        b.insert("metadata".into(), s.metadata.clone());
    }
    put(&mut b, "configId", &s.config_id);
    put(&mut b, "queueId", &s.queue_id);
    put(&mut b, "authorUserId", &s.author_user_id);
    b.insert("environment".into(), json!(s.environment));
    b.insert("timestamp".into(), json!(s.timestamp.to_iso_micros()));
    envelope(
        "score-create".into(),
        event_id("score", project, &s.id, s.updated_at),
        s.updated_at,
        b,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AccessLevel;
    use crate::record::{Change, Level, ObservationPatch, ObservationType, Patch};

    fn parse_one(event: &Value) -> Change {
        let batch = crate::ingest::parse_batch(
            &json!({"batch": [event]}),
            AccessLevel::Full,
            &crate::score_config::NoConfigs,
        )
        .expect("envelope");
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        batch.changes.into_iter().next().expect("one change").change
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let t = Timestamp::from_micros(5);
        assert_eq!(
            event_id("trace", "p", "a", t),
            event_id("trace", "p", "a", t)
        );
        assert_ne!(
            event_id("trace", "p", "ab", t),
            event_id("trace", "pa", "b", t)
        );
        assert_ne!(
            event_id("trace", "p", "a", t),
            event_id("trace", "p", "a", Timestamp::from_micros(6))
        );
        assert_eq!(event_id("trace", "p", "a", t).len(), 36);
    }

    #[test]
    fn observation_event_parses_back_to_the_same_state() {
        let mut p = ObservationPatch::new("o1", ObservationType::Tool);
        p.trace_id = Some("t1".into());
        p.name = Patch::Set("lookup".into());
        p.start_time = Some(Timestamp::from_micros(1_700_000_000_123_456));
        p.level = Patch::Set(Level::Warning);
        p.usage = Some([("input".to_string(), 7u64)].into_iter().collect());
        let at = Timestamp::from_micros(1_700_000_000_200_000);
        let mut rec = ObservationRecord::empty(&p, "t1".into(), at);
        rec.merge(p, at);
        let io = Io {
            input: Some(json!({"q": "x"})),
            output: None,
        };
        let ev = observation("proj", &rec, &io);
        assert_eq!(ev["type"], "tool-create");
        let Change::Observation(back) = parse_one(&ev) else {
            panic!("not an observation: {ev}");
        };
        let mut again = ObservationRecord::empty(&back, "t1".into(), at);
        again.merge(back, at);
        assert_eq!(again.start_time, rec.start_time);
        assert_eq!(again.level, Level::Warning);
        assert_eq!(again.provided_usage, rec.provided_usage);
        assert_eq!(again.model, None);
    }

    #[test]
    fn trace_event_clears_emptied_fields() {
        let mut t = TraceRecord::empty("t".into(), Timestamp::from_micros(1));
        t.last_event = Timestamp::from_micros(1);
        let ev = trace("p", &t, &Io::default());
        assert_eq!(ev["body"]["name"], Value::Null);
        let Change::Trace(patch) = parse_one(&ev) else {
            panic!("not a trace");
        };
        assert_eq!(patch.name, Patch::Clear);
        assert_eq!(patch.user_id, Patch::Clear);
    }

    #[test]
    fn every_score_type_parses_back() {
        let now = Timestamp::from_micros(1_000_000);
        for value in [
            ScoreValue::Numeric(0.5),
            ScoreValue::Boolean(true),
            ScoreValue::Categorical {
                label: "good".into(),
                value: 0.0,
            },
            ScoreValue::Text("fine".into()),
            ScoreValue::Correction("better".into()),
        ] {
            let s = ScoreRecord {
                id: "s".into(),
                target: ScoreTarget::Trace {
                    trace_id: "t".into(),
                    observation_id: Some("o".into()),
                },
                name: "n".into(),
                value: value.clone(),
                source: crate::record::ScoreSource::Eval,
                comment: Some("c".into()),
                metadata: json!({"k": 1}),
                config_id: None,
                queue_id: None,
                author_user_id: None,
                environment: "prod".into(),
                timestamp: now,
                created_at: now,
                updated_at: now,
            };
            let Change::Score(back) = parse_one(&score("p", &s)) else {
                panic!("not a score");
            };
            assert_eq!(back.value, value);
            assert_eq!(back.target, s.target);
            assert_eq!(back.metadata, s.metadata);
            assert_eq!(back.timestamp, s.timestamp);
        }
    }
}
