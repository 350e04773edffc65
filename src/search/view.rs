//! What indexing reads of a stored observation or trace row: the fields its document is made
//! of, with the metadata taken as its searchable text while the row is parsed. Building the record's
//! metadata as `Value`s only to walk them once was the largest part of reading a row.
//!
//! Must not: decide what goes into a document (`schema` does) or read the store.

use serde::Deserialize;

use super::extract::metadata_text;
use super::schema::METADATA_CAP;
use crate::record::{CostMap, Level, ObservationType};
use crate::time::Timestamp;

/// An observation row as the index needs it. Field names and types follow `ObservationRecord`
/// (a test parses a full record through both); fields it does not need are skipped unparsed.
#[derive(Debug, Deserialize)]
pub struct ObservationView {
    pub trace_id: String,
    #[serde(rename = "type")]
    pub kind: ObservationType,
    pub name: Option<String>,
    pub start_time: Timestamp,
    pub end_time: Option<Timestamp>,
    /// `json_values_text` of the metadata values, capped at `METADATA_CAP`.
    #[serde(deserialize_with = "metadata")]
    pub metadata: String,
    pub level: Level,
    pub status_message: Option<String>,
    pub version: Option<String>,
    pub environment: String,
    pub model: Option<String>,
    #[serde(default)]
    pub cost_details: CostMap,
}

/// A trace row as the index needs it (field names and types follow `TraceRecord`; a test
/// parses a full record through both).
#[derive(Debug, Deserialize)]
pub struct TraceView {
    pub timestamp: Timestamp,
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub release: Option<String>,
    pub version: Option<String>,
    /// `json_values_text` of the metadata values, capped at `METADATA_CAP`.
    #[serde(deserialize_with = "metadata")]
    pub metadata: String,
    pub tags: Vec<String>,
    pub environment: String,
}

impl ObservationView {
    /// The total cost, as `store::observation_total_cost` reads it from the record.
    pub fn total_cost(&self) -> Option<f64> {
        self.cost_details.get("total").copied()
    }
}

fn metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    metadata_text(d, METADATA_CAP)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::{ObservationPatch, ObservationRecord, TraceRecord};
    use crate::search::schema::DocText;
    use crate::store::{Io, observation_total_cost};

    /// Each case (a field set to a value the record cannot hold) fails to parse as the record
    /// and as its view alike, so the indexer never indexes a row the store would refuse.
    fn both_reject<R: serde::de::DeserializeOwned, V: serde::de::DeserializeOwned>(
        valid: &serde_json::Value,
        cases: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
    ) {
        for (field, value) in cases {
            let mut bad = valid.clone();
            bad[field] = value;
            let row = serde_json::to_vec(&bad).unwrap();
            assert!(
                serde_json::from_slice::<R>(&row).is_err(),
                "record: {field}"
            );
            assert!(serde_json::from_slice::<V>(&row).is_err(), "view: {field}");
        }
    }

    #[test]
    fn a_view_reads_what_the_record_holds() {
        let mut full = ObservationRecord::empty(
            &ObservationPatch::new("o1", ObservationType::Generation),
            "t1".into(),
            Timestamp::from_micros(1_000),
        );
        full.name = Some("chat \"turn\" ü".into());
        full.end_time = Some(Timestamp::from_micros(5_000));
        full.level = Level::Warning;
        full.status_message = Some("slow".into());
        full.version = Some("v2".into());
        full.environment = "staging".into();
        full.model = Some("gpt-4o".into());
        full.cost_details.insert("input".into(), 0.5);
        full.cost_details.insert("total".into(), 1.25);
        full.model_parameters = json!({"temperature": 0.2}).as_object().cloned();
        full.metadata = json!({
            "attributes": {"llm.model_name": "gpt-4o", "n": 3, "deep": [["x", {"y": "大海"}]]},
            "note": "{\"inner\": \"json\", \"inner\": \"twice\"}",
            "blob": "QUJD".repeat(100),
            "flag": true,
        })
        .as_object()
        .cloned()
        .unwrap();
        let mut bare = full.clone();
        bare.name = None;
        bare.end_time = None;
        bare.status_message = None;
        bare.version = None;
        bare.model = None;
        bare.cost_details.clear();
        bare.metadata.clear();
        let mut long = full.clone();
        long.metadata
            .insert("long".into(), json!("word ".repeat(5000)));
        let io = Io {
            input: Some(json!([{"role": "user", "content": "hello"}])),
            output: Some(json!("hi")),
        };
        let valid = serde_json::to_value(&full).unwrap();
        for rec in [full, bare, long] {
            let row = serde_json::to_vec(&rec).unwrap();
            let io_json = serde_json::to_vec(&io).unwrap();
            let mut view: ObservationView = serde_json::from_slice(&row).unwrap();
            // What indexing read before: the stored bytes parsed as the record.
            let rec: ObservationRecord = serde_json::from_slice(&row).unwrap();
            assert_eq!(view.trace_id, rec.trace_id);
            assert_eq!(view.kind, rec.kind);
            assert_eq!(view.name, rec.name);
            assert_eq!(view.start_time, rec.start_time);
            assert_eq!(view.end_time, rec.end_time);
            assert_eq!(view.level, rec.level);
            assert_eq!(view.status_message, rec.status_message);
            assert_eq!(view.version, rec.version);
            assert_eq!(view.environment, rec.environment);
            assert_eq!(view.model, rec.model);
            assert_eq!(view.total_cost(), observation_total_cost(&rec));
            assert_eq!(
                DocText::of_view(&mut view, &io_json).unwrap(),
                DocText::of_observation(&rec, &io)
            );
        }
        // A row whose indexed fields do not parse as the record's does not parse as a view.
        assert!(serde_json::from_value::<ObservationView>(valid.clone()).is_ok());
        both_reject::<ObservationRecord, ObservationView>(
            &valid,
            [
                ("metadata", json!(null)),
                ("metadata", json!(["a", "b"])),
                ("type", json!("NOPE")),
                ("start_time", json!("yesterday")),
                ("level", json!(3)),
                ("environment", json!(null)),
            ],
        );
    }

    #[test]
    fn a_trace_view_reads_what_the_record_holds() {
        let mut full = TraceRecord::empty("t1".into(), Timestamp::from_micros(7_000));
        full.name = Some("plan".into());
        full.user_id = Some("alice".into());
        full.session_id = Some("s1".into());
        full.release = Some("r1".into());
        full.version = Some("v1".into());
        full.tags = vec!["a".into(), "b".into()];
        full.environment = "prod".into();
        full.metadata = json!({"region": "eu", "n": [1, {"x": "größe"}]})
            .as_object()
            .cloned()
            .unwrap();
        let bare = TraceRecord::empty("t2".into(), Timestamp::from_micros(1));
        let io = Io {
            input: Some(json!({"question": "why"})),
            output: None,
        };
        let valid = serde_json::to_value(&full).unwrap();
        for rec in [full, bare] {
            let row = serde_json::to_vec(&rec).unwrap();
            let io_json = serde_json::to_vec(&io).unwrap();
            let mut view: TraceView = serde_json::from_slice(&row).unwrap();
            let rec: TraceRecord = serde_json::from_slice(&row).unwrap();
            assert_eq!(view.timestamp, rec.timestamp);
            assert_eq!(view.name, rec.name);
            assert_eq!(view.user_id, rec.user_id);
            assert_eq!(view.session_id, rec.session_id);
            assert_eq!(view.release, rec.release);
            assert_eq!(view.version, rec.version);
            assert_eq!(view.tags, rec.tags);
            assert_eq!(view.environment, rec.environment);
            assert_eq!(
                DocText::of_trace_view(&mut view, &io_json).unwrap(),
                DocText::of_trace(&rec, &io)
            );
        }
        both_reject::<TraceRecord, TraceView>(
            &valid,
            [
                ("metadata", json!(null)),
                ("tags", json!("a")),
                ("timestamp", json!("now")),
                ("environment", json!(1)),
            ],
        );
    }
}
