//! The index schema (versioned) and the mapping from records to documents.
//!
//! One document per trace and one per observation. Human text (input, output, name, metadata
//! values, status message) is full text with positions; ids and enumerations are single
//! keyword terms; time, cost and latency are fast fields. Only the three ids needed to turn a
//! hit back into a record are stored: the store stays the source of every value shown.

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{TantivyDocument, Term};

use super::text::{self, capped, json_text, json_values_text, payload_text};
use crate::record::{ObservationRecord, TraceRecord};
use crate::store::{Io, observation_total_cost};

/// Bumped whenever the schema, the tokenizers or what goes into a document change: an index
/// with another version is rebuilt on start.
pub const SCHEMA_VERSION: u64 = 3;

/// Tokenizer names registered on the index.
pub const TEXT_TOKENIZER: &str = "sightline_text";
pub const KEYWORD_TOKENIZER: &str = "sightline_keyword";

/// Per-field caps on indexed text, in bytes: a 5 MB prompt or an inlined image costs the index
/// at most this much.
pub const INPUT_CAP: usize = 64 * 1024;
pub const OUTPUT_CAP: usize = 64 * 1024;
pub const METADATA_CAP: usize = 16 * 1024;
pub const NAME_CAP: usize = 1024;
pub const STATUS_CAP: usize = 4 * 1024;

pub const KIND_TRACE: &str = "trace";
pub const KIND_OBSERVATION: &str = "observation";

/// The full-text fields, in the order highlights are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextField {
    Input,
    Output,
    Name,
    Metadata,
    StatusMessage,
}

impl TextField {
    pub const ALL: [TextField; 5] = [
        TextField::Input,
        TextField::Output,
        TextField::Name,
        TextField::Metadata,
        TextField::StatusMessage,
    ];

    /// The name used in queries (`input:`) and in highlights.
    pub fn as_str(self) -> &'static str {
        match self {
            TextField::Input => "input",
            TextField::Output => "output",
            TextField::Name => "name",
            TextField::Metadata => "metadata",
            TextField::StatusMessage => "statusMessage",
        }
    }
}

/// Keyword fields: one lowercased term per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordField {
    Type,
    Level,
    Model,
    User,
    Session,
    Environment,
    Tags,
    Release,
    Version,
}

/// Exact id fields (case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdField {
    Id,
    Trace,
}

#[derive(Clone)]
pub struct Fields {
    pub schema: Schema,
    /// `project \u{1f} kind \u{1f} id`: unique, the delete term of one document.
    pub key: Field,
    /// `project \u{1f} trace id`: deletes a trace and all its observations at once.
    pub trace_key: Field,
    pub project: Field,
    pub kind: Field,
    pub id: Field,
    pub trace_id: Field,
    text: [Field; 5],
    keyword: [Field; 9],
    /// Microseconds since the epoch: trace timestamp or observation start time.
    pub time: Field,
    pub cost: Field,
    pub latency_ms: Field,
}

impl Fields {
    pub fn build() -> Fields {
        let mut b = Schema::builder();
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let keyword_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(KEYWORD_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic),
        );
        let key = b.add_text_field("key", STRING);
        let trace_key = b.add_text_field("trace_key", STRING);
        let project = b.add_text_field("project", STRING);
        let kind = b.add_text_field("kind", STRING | STORED);
        let id = b.add_text_field("id", STRING | STORED);
        let trace_id = b.add_text_field("trace_id", STRING | STORED);
        let text = TextField::ALL.map(|f| b.add_text_field(f.as_str(), text_options.clone()));
        let keyword = [
            "type",
            "level",
            "model",
            "user",
            "session",
            "environment",
            "tags",
            "release",
            "version",
        ]
        .map(|name| b.add_text_field(name, keyword_options.clone()));
        let time = b.add_i64_field("time", INDEXED | FAST);
        let cost = b.add_f64_field("cost", FAST);
        let latency_ms = b.add_f64_field("latency_ms", FAST);
        Fields {
            schema: b.build(),
            key,
            trace_key,
            project,
            kind,
            id,
            trace_id,
            text,
            keyword,
            time,
            cost,
            latency_ms,
        }
    }

    pub fn text(&self, f: TextField) -> Field {
        self.text[f as usize]
    }

    pub fn keyword(&self, f: KeywordField) -> Field {
        self.keyword[f as usize]
    }

    pub fn id_field(&self, f: IdField) -> Field {
        match f {
            IdField::Id => self.id,
            IdField::Trace => self.trace_id,
        }
    }

    pub fn key_term(&self, project: &str, kind: &str, id: &str) -> Term {
        Term::from_field_text(self.key, &format!("{project}\u{1f}{kind}\u{1f}{id}"))
    }

    pub fn trace_key_term(&self, project: &str, trace_id: &str) -> Term {
        Term::from_field_text(self.trace_key, &format!("{project}\u{1f}{trace_id}"))
    }

    fn base(&self, project: &str, kind: &str, id: &str, trace_id: &str) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        d.add_text(self.key, format!("{project}\u{1f}{kind}\u{1f}{id}"));
        d.add_text(self.trace_key, format!("{project}\u{1f}{trace_id}"));
        d.add_text(self.project, project);
        d.add_text(self.kind, kind);
        d.add_text(self.id, id);
        d.add_text(self.trace_id, trace_id);
        d
    }

    fn add_text(&self, d: &mut TantivyDocument, texts: &DocText) {
        for f in TextField::ALL {
            let t = texts.get(f);
            if !t.is_empty() {
                d.add_text(self.text(f), t);
            }
        }
    }

    fn add_keyword(&self, d: &mut TantivyDocument, f: KeywordField, value: Option<&str>) {
        if let Some(v) = value.and_then(text::keyword) {
            d.add_text(self.keyword(f), v);
        }
    }

    /// The trace-level keywords a trace shares with its observations' documents.
    fn add_trace_context(&self, d: &mut TantivyDocument, t: &TraceRecord) {
        self.add_keyword(d, KeywordField::User, t.user_id.as_deref());
        self.add_keyword(d, KeywordField::Session, t.session_id.as_deref());
        for tag in &t.tags {
            self.add_keyword(d, KeywordField::Tags, Some(tag));
        }
    }

    /// A trace's document; `texts`: its `DocText`.
    pub fn trace_doc(&self, project: &str, t: &TraceRecord, texts: &DocText) -> TantivyDocument {
        let mut d = self.base(project, KIND_TRACE, &t.id, &t.id);
        self.add_text(&mut d, texts);
        self.add_keyword(&mut d, KeywordField::Type, Some("trace"));
        self.add_trace_context(&mut d, t);
        self.add_keyword(&mut d, KeywordField::Environment, Some(&t.environment));
        self.add_keyword(&mut d, KeywordField::Release, t.release.as_deref());
        self.add_keyword(&mut d, KeywordField::Version, t.version.as_deref());
        d.add_i64(self.time, t.timestamp.micros());
        d
    }

    /// An observation's document (`texts`: its `DocText`); `trace` (its trace, when stored)
    /// lends it the trace's user, session and tags, so those filters can be applied by the
    /// index to observation hits too.
    pub fn observation_doc(
        &self,
        project: &str,
        o: &ObservationRecord,
        texts: &DocText,
        trace: Option<&TraceRecord>,
    ) -> TantivyDocument {
        let mut d = self.base(project, KIND_OBSERVATION, &o.id, &o.trace_id);
        if let Some(t) = trace {
            self.add_trace_context(&mut d, t);
        }
        self.add_text(&mut d, texts);
        self.add_keyword(&mut d, KeywordField::Type, Some(o.kind.as_str()));
        self.add_keyword(&mut d, KeywordField::Level, Some(o.level.as_str()));
        self.add_keyword(&mut d, KeywordField::Model, o.model.as_deref());
        self.add_keyword(&mut d, KeywordField::Environment, Some(&o.environment));
        self.add_keyword(&mut d, KeywordField::Version, o.version.as_deref());
        d.add_i64(self.time, o.start_time.micros());
        if let Some(cost) = observation_total_cost(o) {
            d.add_f64(self.cost, cost);
        }
        if let Some(end) = o.end_time {
            d.add_f64(self.latency_ms, end.seconds_since(o.start_time) * 1000.0);
        }
        d
    }
}

/// A fingerprint of what `add_trace_context` puts into observation documents: when a trace
/// changes without changing it, its observations' documents need not be rewritten.
pub fn trace_context_hash(t: &TraceRecord) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&t.user_id, &t.session_id, &t.tags).hash(&mut h);
    h.finish()
}

/// The searchable text of one document, field by field. Built the same way for indexing and
/// for highlighting, so highlight offsets always land on what was indexed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DocText {
    fields: [String; 5],
}

impl DocText {
    pub fn get(&self, f: TextField) -> &str {
        &self.fields[f as usize]
    }

    pub fn of_trace(t: &TraceRecord, io: &Io) -> DocText {
        DocText::build(io, t.name.as_deref(), &t.metadata, None)
    }

    pub fn of_observation(o: &ObservationRecord, io: &Io) -> DocText {
        DocText::build(
            io,
            o.name.as_deref(),
            &o.metadata,
            o.status_message.as_deref(),
        )
    }

    /// `of_trace` from the payload's stored JSON (`Snapshot::trace_with_io_json`).
    pub fn of_trace_json(t: &TraceRecord, io_json: &[u8]) -> Result<DocText, serde_json::Error> {
        let (input, output) = payload_text(io_json, INPUT_CAP, OUTPUT_CAP)?;
        Ok(DocText::with(
            input,
            output,
            t.name.as_deref(),
            &t.metadata,
            None,
        ))
    }

    /// `of_observation` from the payload's stored JSON (`Snapshot::observation_with_io_json`).
    pub fn of_observation_json(
        o: &ObservationRecord,
        io_json: &[u8],
    ) -> Result<DocText, serde_json::Error> {
        let (input, output) = payload_text(io_json, INPUT_CAP, OUTPUT_CAP)?;
        Ok(DocText::with(
            input,
            output,
            o.name.as_deref(),
            &o.metadata,
            o.status_message.as_deref(),
        ))
    }

    fn build(
        io: &Io,
        name: Option<&str>,
        metadata: &serde_json::Map<String, serde_json::Value>,
        status: Option<&str>,
    ) -> DocText {
        let payload = |v: &Option<serde_json::Value>, cap| {
            v.as_ref().map_or_else(String::new, |v| json_text(v, cap))
        };
        DocText::with(
            payload(&io.input, INPUT_CAP),
            payload(&io.output, OUTPUT_CAP),
            name,
            metadata,
            status,
        )
    }

    fn with(
        input: String,
        output: String,
        name: Option<&str>,
        metadata: &serde_json::Map<String, serde_json::Value>,
        status: Option<&str>,
    ) -> DocText {
        let plain = |v: Option<&str>, cap| v.map_or_else(String::new, |v| capped(v, cap));
        DocText {
            fields: [
                input,
                output,
                plain(name, NAME_CAP),
                json_values_text(metadata.values(), METADATA_CAP),
                plain(status, STATUS_CAP),
            ],
        }
    }
}
