//! The index schema (versioned) and the mapping from records to documents.
//!
//! One document per trace and one per observation. Human text (input, output, name, metadata
//! values, status message) is full text with positions; ids and enumerations are single
//! keyword terms; time, cost and latency are fast fields. Only what turns a hit back into a
//! record is stored (kind, id and trace id, packed into one value): the store stays the source
//! of every value shown.
//!
//! Every document is one more entry per indexed field, so no field is indexed twice: ids are
//! searched through the delete keys (`id:` is a key of either kind, `traceId:` a trace key),
//! `time` is only a fast field (ranges run on the column), and norms are kept only where a
//! document can hold more than one token (text, tags): for a one-token field the norm is 1
//! with or without them, so scores do not change.

use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{TantivyDocument, Term};

use super::extract::{capped, json_text, json_values_text, payload_text};
use super::text;
use super::view::{ObservationView, TraceView};
use crate::record::{ObservationRecord, TraceRecord};
use crate::store::Io;

/// Bumped whenever the schema, the tokenizers or what goes into a document change: an index
/// with another version is rebuilt on start.
pub const SCHEMA_VERSION: u64 = 4;

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
    /// Stored only: kind, id and trace id (`DocRef`).
    pub doc_ref: Field,
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
        let single = |tokenizer: &str| {
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(tokenizer)
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            )
        };
        let key = b.add_text_field("key", single("raw"));
        let trace_key = b.add_text_field("trace_key", single("raw"));
        let project = b.add_text_field("project", single("raw"));
        let kind = b.add_text_field("kind", single("raw"));
        let doc_ref = b.add_bytes_field("ref", STORED);
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
        .map(|name| {
            let options = single(KEYWORD_TOKENIZER);
            // A document carries several tags: their norm weighs a tag match.
            let options = if name == "tags" {
                options.set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer(KEYWORD_TOKENIZER)
                        .set_index_option(IndexRecordOption::Basic),
                )
            } else {
                options
            };
            b.add_text_field(name, options)
        });
        let time = b.add_i64_field("time", FAST);
        let cost = b.add_f64_field("cost", FAST);
        let latency_ms = b.add_f64_field("latency_ms", FAST);
        Fields {
            schema: b.build(),
            key,
            trace_key,
            project,
            kind,
            doc_ref,
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

    /// The terms an id (`IdField::Id`: of a trace or an observation) of `project` is indexed
    /// under; also prefixes of such ids, as the id comes last in every key.
    pub fn id_terms(&self, project: &str, f: IdField, id: &str) -> Vec<Term> {
        match f {
            IdField::Id => vec![
                self.key_term(project, KIND_TRACE, id),
                self.key_term(project, KIND_OBSERVATION, id),
            ],
            IdField::Trace => vec![self.trace_key_term(project, id)],
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
        d.add_bytes(
            self.doc_ref,
            &DocRef::encode(kind == KIND_TRACE, id, trace_id),
        );
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
    fn add_trace_context(&self, d: &mut TantivyDocument, t: &TraceView) {
        self.add_keyword(d, KeywordField::User, t.user_id.as_deref());
        self.add_keyword(d, KeywordField::Session, t.session_id.as_deref());
        for tag in &t.tags {
            self.add_keyword(d, KeywordField::Tags, Some(tag));
        }
    }

    /// A trace's document; `texts`: its `DocText`.
    pub fn trace_doc(
        &self,
        project: &str,
        id: &str,
        t: &TraceView,
        texts: &DocText,
    ) -> TantivyDocument {
        let mut d = self.base(project, KIND_TRACE, id, id);
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
        id: &str,
        o: &ObservationView,
        texts: &DocText,
        trace: Option<&TraceView>,
    ) -> TantivyDocument {
        let mut d = self.base(project, KIND_OBSERVATION, id, &o.trace_id);
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
        if let Some(cost) = o.total_cost() {
            d.add_f64(self.cost, cost);
        }
        if let Some(end) = o.end_time {
            d.add_f64(self.latency_ms, end.seconds_since(o.start_time) * 1000.0);
        }
        d
    }
}

/// The stored value of a document: what a hit needs to name its record. Packed, as it is
/// most of what the index stores per document: `[flags][id length, LEB128 (observations
/// only)][id][trace id (observations only)]`, an id made of an even number of lowercase hex
/// digits (OpenTelemetry's span and trace ids) kept as the bytes it spells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRef {
    pub trace: bool,
    pub id: String,
    pub trace_id: String,
}

const REF_OBSERVATION: u8 = 1;
const REF_ID_HEX: u8 = 2;
const REF_TRACE_HEX: u8 = 4;

impl DocRef {
    pub fn encode(trace: bool, id: &str, trace_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + id.len() + trace_id.len());
        out.push(0);
        let id_hex = push_id(&mut out, id, !trace);
        out[0] = if trace {
            u8::from(id_hex) * REF_ID_HEX
        } else {
            let trace_hex = push_id(&mut out, trace_id, false);
            REF_OBSERVATION
                | (u8::from(id_hex) * REF_ID_HEX)
                | (u8::from(trace_hex) * REF_TRACE_HEX)
        };
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<DocRef> {
        let (&flags, mut rest) = bytes.split_first()?;
        let id_bytes = if flags & REF_OBSERVATION != 0 {
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let (&b, tail) = rest.split_first()?;
                rest = tail;
                len |= usize::from(b & 0x7f).checked_shl(shift)?;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            let (id, tail) = rest.split_at_checked(len)?;
            rest = tail;
            id
        } else {
            std::mem::take(&mut rest)
        };
        let id = unpack_id(id_bytes, flags & REF_ID_HEX != 0)?;
        let trace = flags & REF_OBSERVATION == 0;
        let trace_id = if trace {
            id.clone()
        } else {
            unpack_id(rest, flags & REF_TRACE_HEX != 0)?
        };
        Some(DocRef {
            trace,
            id,
            trace_id,
        })
    }
}

/// Appends `id` (packed when it is lowercase hex), after its length when `with_len`; true if
/// packed.
fn push_id(out: &mut Vec<u8>, id: &str, with_len: bool) -> bool {
    let hex = !id.is_empty()
        && id.len().is_multiple_of(2)
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if with_len {
        let mut len = if hex { id.len() / 2 } else { id.len() };
        loop {
            let low = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(low);
                break;
            }
            out.push(low | 0x80);
        }
    }
    if hex {
        let nibble = |b: u8| if b <= b'9' { b - b'0' } else { b - b'a' + 10 };
        out.extend(
            id.as_bytes()
                .chunks(2)
                .map(|p| nibble(p[0]) << 4 | nibble(p[1])),
        );
    } else {
        out.extend_from_slice(id.as_bytes());
    }
    hex
}

fn unpack_id(bytes: &[u8], hex: bool) -> Option<String> {
    if !hex {
        return String::from_utf8(bytes.to_vec()).ok();
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    Some(out)
}

/// A fingerprint of what `add_trace_context` puts into observation documents: when a trace
/// changes without changing it, its observations' documents need not be rewritten.
pub fn trace_context_hash(t: &TraceView) -> u64 {
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

    /// `of_trace` from the row as indexing reads it and the payload's stored JSON
    /// (`Snapshot::trace_with_io_json`). Takes the metadata text out of `t`.
    pub fn of_trace_view(t: &mut TraceView, io_json: &[u8]) -> Result<DocText, serde_json::Error> {
        let (input, output) = payload_text(io_json, INPUT_CAP, OUTPUT_CAP)?;
        Ok(DocText::with(
            input,
            output,
            t.name.as_deref(),
            std::mem::take(&mut t.metadata),
            None,
        ))
    }

    /// `of_observation` from the row as indexing reads it and the payload's stored JSON
    /// (`Snapshot::observation_with_io_json`). Takes the metadata text out of `o`.
    pub fn of_view(o: &mut ObservationView, io_json: &[u8]) -> Result<DocText, serde_json::Error> {
        let (input, output) = payload_text(io_json, INPUT_CAP, OUTPUT_CAP)?;
        Ok(DocText::with(
            input,
            output,
            o.name.as_deref(),
            std::mem::take(&mut o.metadata),
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
            json_values_text(metadata.values(), METADATA_CAP),
            status,
        )
    }

    fn with(
        input: String,
        output: String,
        name: Option<&str>,
        metadata: String,
        status: Option<&str>,
    ) -> DocText {
        let plain = |v: Option<&str>, cap| v.map_or_else(String::new, |v| capped(v, cap));
        DocText {
            fields: [
                input,
                output,
                plain(name, NAME_CAP),
                metadata,
                plain(status, STATUS_CAP),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_refs_round_trip_and_pack_hex_ids() {
        let long = "x".repeat(300);
        let cases = [
            (
                true,
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
            (
                false,
                "00f067aa0ba902b7",
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
            (false, "trace-1-gen", "4bf92f3577b34da6a3ce929d0e0e4736"),
            (false, "00f067aa0ba902b7", "Trace-ABC"),
            (false, "ABCD", "abc"),
            (true, "ÄÖ ü \u{1f}", "ÄÖ ü \u{1f}"),
            (false, "", ""),
            (false, long.as_str(), "0"),
            (false, "0123456789abcdef", long.as_str()),
        ];
        for (trace, id, trace_id) in cases {
            let bytes = DocRef::encode(trace, id, trace_id);
            let back = DocRef {
                trace,
                id: id.to_string(),
                trace_id: trace_id.to_string(),
            };
            assert_eq!(
                DocRef::decode(&bytes),
                Some(back),
                "{trace} {id} {trace_id}"
            );
        }
        // OpenTelemetry ids take half their text.
        let otel = DocRef::encode(
            false,
            "00f067aa0ba902b7",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        assert_eq!(otel.len(), 1 + 1 + 8 + 16);
        assert_eq!(DocRef::decode(&[]), None);
        assert_eq!(DocRef::decode(&[REF_OBSERVATION, 5, b'a']), None);
        assert_eq!(DocRef::decode(&[REF_OBSERVATION, 0x80]), None);
        assert_eq!(DocRef::decode(&[0, 0xff]), None);
    }
}
