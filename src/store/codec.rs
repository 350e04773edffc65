//! Value encoding for redb rows: a format tag byte, then the payload.
//!
//! Rows are JSON so that `serde_json::Value` fields (metadata, model parameters) round-trip
//! without a schema per field. Input/output payloads are kept apart from rows, so that scans
//! over rows never pay for multi-megabyte prompts.
//!
//! Tags: 1 = JSON; 2 = LZ4-compressed JSON (written by schema version 1, still read); 3 = JSON
//! compressed with zstd and the built-in dictionary `zstd-dict-1.txt` (written since schema
//! version 2 for any value of `COMPRESS_AT` bytes or more). A record is a few hundred bytes to a
//! few KiB of JSON whose keys (our field names, common OTel/OpenInference/Langfuse attribute
//! names, chat-message shapes) repeat in every other record; per-value LZ4 cannot see that
//! repetition, a shared dictionary can: rows shrink to about a fifth, payloads by a third.
//!
//! Tag 4 (schema version 2) is an observation row with its input/output attached:
//! `[4][row length u32 LE][row value][payload value]`, both inner values tagged as above. One
//! B-tree entry per observation instead of two is one random page less per span to rewrite at
//! each commit. Tag 5 (since schema version 3; written for observations and traces) is the same
//! pair compressed as one: `[5][row JSON length u32 LE][JSON length u32 LE][zstd with the
//! dictionary of the row's JSON followed by the payload's]`. One zstd frame instead of two
//! halves the per-value work that does not depend on the size (context reset, entropy tables),
//! which is most of what compressing a value of a few hundred bytes costs, and lets the
//! payload's matches reach into the row. Only payloads up to `ATTACH_IO_MAX` bytes of JSON are
//! attached; larger ones stay in `observation_io` / `trace_io`, so scans over rows stay small
//! however large the prompts are.
//!
//! Tag 6 (since schema version 4) is a change-log entry in binary: `[6][kind u8][flag u8]
//! [project length u16 LE][project][id]` (`encode_change`). As JSON an entry was ~80 bytes that
//! the dictionary brought to ~70 at the price of a zstd frame per span on the writer thread and
//! a decompression and a parse per entry for every follower; binary it is ~50 bytes and costs a
//! copy. Entries written as JSON (tags 1–3) still read.
//!
//! Tags 7 and 8 (since schema version 4) are tags 3 and 5 compressed with a dictionary trained
//! from the store's own values (`dict`) instead of the built-in one, named by its id:
//! `[7][dictionary id u64 LE][length u32 LE][zstd]` and `[8][dictionary id u64 LE][row JSON
//! length u32 LE][JSON length u32 LE][zstd]`. Only a store's writer thread writes them.
//!
//! Tag 9 (since schema version 5) is not a value but where one is: `[9][sequence, LEB128]`, the
//! key of the value in `record_values` (see `values`). Trace and observation rows hold it.

use std::cell::RefCell;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::StoreError;
use super::dict::{self, Trained};
use super::tables::ChangeRef;

const TAG_JSON: u8 = 1;
const TAG_LZ4_JSON: u8 = 2;
const TAG_ZSTD_DICT1_JSON: u8 = 3;
const TAG_ROW_WITH_IO: u8 = 4;
const TAG_ZSTD_ROW_AND_IO: u8 = 5;
const TAG_CHANGE: u8 = 6;
const TAG_ZSTD_TRAINED_JSON: u8 = 7;
const TAG_ZSTD_TRAINED_ROW_AND_IO: u8 = 8;
const TAG_VALUE_REF: u8 = 9;
/// Largest payload, in bytes of JSON, attached to its row (tag 5). Tag 4 attached up to 4 KiB
/// compressed, which payloads of about this size take.
pub const ATTACH_IO_MAX: usize = 12 * 1024;
/// Below this size compression costs more than it saves.
const COMPRESS_AT: usize = 64;
/// zstd level: level 1 is within 3 % of level 3's size on records, at a fraction of the CPU.
const ZSTD_LEVEL: i32 = 1;
/// The dictionary of tag 3. Frozen: a value written with it can only be read with these exact
/// bytes, so a better dictionary needs a new tag.
const DICT1: &[u8] = include_bytes!("zstd-dict-1.txt");
/// Largest decompressed value accepted: a corrupt length prefix must not allocate without bound.
const MAX_VALUE_BYTES: usize = 1 << 30;

fn encoder_dict() -> &'static zstd::dict::EncoderDictionary<'static> {
    static D: OnceLock<zstd::dict::EncoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| zstd::dict::EncoderDictionary::copy(DICT1, ZSTD_LEVEL))
}

fn decoder_dict() -> &'static zstd::dict::DecoderDictionary<'static> {
    static D: OnceLock<zstd::dict::DecoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| zstd::dict::DecoderDictionary::copy(DICT1))
}

thread_local! {
    // zstd contexts are costly to create; each thread keeps one of each.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Appends `[uncompressed length u32 LE][zstd frame of src]` to `out`, compressed with `dict`
/// or the built-in dictionary.
fn zstd_compress_into(
    src: &[u8],
    out: &mut Vec<u8>,
    dict: Option<&'static Trained>,
) -> Result<(), StoreError> {
    let err = |e: std::io::Error| StoreError::Encode(format!("zstd: {e}"));
    let len = u32::try_from(src.len())
        .map_err(|_| StoreError::Encode("value larger than 4 GiB".into()))?;
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            let mut c =
                zstd::bulk::Compressor::with_prepared_dictionary(encoder_dict()).map_err(err)?;
            // The length prefix says the size and the store checksums its pages: the frame's
            // own size, checksum and dictionary id would be 4–12 bytes per value for nothing.
            for p in [
                zstd::zstd_safe::CParameter::ContentSizeFlag(false),
                zstd::zstd_safe::CParameter::ChecksumFlag(false),
                zstd::zstd_safe::CParameter::DictIdFlag(false),
            ] {
                c.set_parameter(p).map_err(err)?;
            }
            *slot = Some(c);
        }
        let Some(c) = slot.as_mut() else {
            return Err(StoreError::Encode("zstd: no compressor".into()));
        };
        // Referencing a prepared dictionary is a pointer swap; the parameters above stay.
        match dict {
            Some(t) => c.set_prepared_dictionary(t.encoder()),
            None => c.set_prepared_dictionary(encoder_dict()),
        }
        .map_err(err)?;
        out.extend_from_slice(&len.to_le_bytes());
        // Compressed straight into the value: no intermediate buffer to allocate and copy.
        let at = out.len();
        out.resize(at + zstd::zstd_safe::compress_bound(src.len()), 0);
        let n = c.compress_to_buffer(src, &mut out[at..]).map_err(err)?;
        out.truncate(at + n);
        Ok(())
    })
}

/// A compressed value: `[tag][dictionary id, for a trained one][header][length][frame]`, with
/// the writer's trained dictionary when it has one (tag `trained`), else the built-in one.
fn compress_tagged(
    json: &[u8],
    (builtin, trained): (u8, u8),
    header: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let dict = dict::for_compression();
    let mut out = Vec::with_capacity(24 + json.len() / 2);
    match dict {
        Some(t) => {
            out.push(trained);
            out.extend_from_slice(&t.id.to_le_bytes());
        }
        None => out.push(builtin),
    }
    out.extend_from_slice(header);
    zstd_compress_into(json, &mut out, dict)?;
    dict::observe(json);
    Ok(out)
}

fn zstd_compress(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    compress_tagged(json, (TAG_ZSTD_DICT1_JSON, TAG_ZSTD_TRAINED_JSON), &[])
}

/// The dictionary a tag-7 or tag-8 value names (after its tag), and the rest of the value.
fn trained(rest: &[u8]) -> Result<(&'static Trained, &[u8]), StoreError> {
    let (id, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("zstd: value too short".into()))?;
    let id = u64::from_le_bytes(*id);
    let t = dict::get(id).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "value compressed with dictionary {id:016x}, which the file does not hold"
        ))
    })?;
    Ok((t, rest))
}

fn zstd_decompress(bytes: &[u8], dict: Option<&'static Trained>) -> Result<Vec<u8>, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("zstd: {what}"));
    let (len, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("value too short".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_VALUE_BYTES {
        return Err(corrupt(format!("implausible length {len}")));
    }
    DECOMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::with_prepared_dictionary(decoder_dict())
                    .map_err(|e| corrupt(e.to_string()))?,
            );
        }
        let Some(d) = slot.as_mut() else {
            return Err(corrupt("no decompressor".into()));
        };
        match dict {
            Some(t) => d.set_prepared_dictionary(t.decoder()),
            None => d.set_prepared_dictionary(decoder_dict()),
        }
        .map_err(|e| corrupt(e.to_string()))?;
        let out = d
            .decompress(body, len)
            .map_err(|e| corrupt(e.to_string()))?;
        if out.len() != len {
            return Err(corrupt(format!("{} bytes, expected {len}", out.len())));
        }
        Ok(out)
    })
}

/// A row as JSON, compressed when large enough to pay.
pub fn encode_row<T: Serialize>(row: &T) -> Result<Vec<u8>, StoreError> {
    with_json(row, |json| tagged(json))
}

thread_local! {
    // The JSON of the value being encoded; kept so that encoding allocates only its result.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the JSON of `row`, serialized into this thread's scratch buffer.
fn with_json<T: Serialize, R>(
    row: &T,
    f: impl FnOnce(&mut Vec<u8>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    SCRATCH.with(|scratch| {
        // A nested call (none today) gets a buffer of its own rather than a panic.
        let mut fresh = Vec::new();
        let mut held = scratch.try_borrow_mut().ok();
        let json = held.as_deref_mut().unwrap_or(&mut fresh);
        json.clear();
        serde_json::to_writer(&mut *json, row).map_err(|e| StoreError::Encode(e.to_string()))?;
        let result = f(json);
        // A rare huge value must not stay allocated for the life of the thread.
        if json.capacity() > 1 << 20 {
            *json = Vec::new();
        }
        result
    })
}

/// A record's value: its row with the payload attached (`io_json`, the payload's JSON: tag 5)
/// or without one (as `encode_row`). `plain` sees the JSON that went in (the row's, then the
/// payload's) and the row's length before it is compressed (`store::handoff`).
pub fn encode_record<T: Serialize>(
    row: &T,
    io_json: Option<&[u8]>,
    plain: impl FnOnce(&[u8], usize),
) -> Result<Vec<u8>, StoreError> {
    with_json(row, |json| {
        let row_len = json.len();
        let value = match io_json {
            Some(io) => {
                let header = u32::try_from(row_len)
                    .map_err(|_| StoreError::Encode("row larger than 4 GiB".into()))?
                    .to_le_bytes();
                json.extend_from_slice(io);
                compress_tagged(
                    json,
                    (TAG_ZSTD_ROW_AND_IO, TAG_ZSTD_TRAINED_ROW_AND_IO),
                    &header,
                )?
            }
            None => tagged(json)?,
        };
        plain(json, row_len);
        Ok(value)
    })
}

/// A row's JSON and its attached payload's JSON, if one is attached.
pub type JsonParts = (Vec<u8>, Option<Vec<u8>>);

/// A stored value's row JSON and, when a payload is attached (tags 4, 5 and 8), the payload's
/// JSON.
pub fn json_parts(bytes: &[u8]) -> Result<JsonParts, StoreError> {
    match bytes.split_first() {
        Some((&TAG_ROW_WITH_IO, _)) => {
            let (row, io) = split_tag4(bytes)?;
            Ok((payload(row)?.into_owned(), Some(payload(io)?.into_owned())))
        }
        Some((&(TAG_ZSTD_ROW_AND_IO | TAG_ZSTD_TRAINED_ROW_AND_IO), _)) => {
            let (row_len, mut json) = unpack_row_and_io(bytes)?;
            let io = json.split_off(row_len);
            Ok((json, Some(io)))
        }
        _ => Ok((payload(bytes)?.into_owned(), None)),
    }
}

/// The payload attached to a stored row, if any.
pub fn attached_io(bytes: &[u8]) -> Result<Option<Io>, StoreError> {
    match bytes.split_first() {
        Some((&TAG_ROW_WITH_IO, _)) => decode_io(split_tag4(bytes)?.1).map(Some),
        Some((&(TAG_ZSTD_ROW_AND_IO | TAG_ZSTD_TRAINED_ROW_AND_IO), _)) => {
            let (row_len, json) = unpack_row_and_io(bytes)?;
            parse(&json[row_len..]).map(Some)
        }
        _ => Ok(None),
    }
}

/// A tag-4 value's row and payload values (each still tagged).
fn split_tag4(bytes: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let rest = bytes.get(1..).unwrap_or_default();
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| StoreError::Corrupt("row with payload: too short".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return Err(StoreError::Corrupt(
            "row with payload: row longer than the value".into(),
        ));
    }
    Ok(rest.split_at(len))
}

/// A tag-5 or tag-8 value: the row's length and the JSON of row and payload.
fn unpack_row_and_io(bytes: &[u8]) -> Result<(usize, Vec<u8>), StoreError> {
    let (dict, rest) = match bytes.split_first() {
        Some((&TAG_ZSTD_TRAINED_ROW_AND_IO, rest)) => {
            let (t, rest) = trained(rest)?;
            (Some(t), rest)
        }
        _ => (None, bytes.get(1..).unwrap_or_default()),
    };
    let (row_len, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| StoreError::Corrupt("row with payload: too short".into()))?;
    let row_len = u32::from_le_bytes(*row_len) as usize;
    let json = zstd_decompress(body, dict)?;
    if row_len > json.len() {
        return Err(StoreError::Corrupt(
            "row with payload: row longer than the value".into(),
        ));
    }
    Ok((row_len, json))
}

/// A row or payload from the plain JSON `json_parts` gives.
pub fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn decode_row<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&TAG_ROW_WITH_IO, _)) => parse(&payload(split_tag4(bytes)?.0)?),
        Some((&(TAG_ZSTD_ROW_AND_IO | TAG_ZSTD_TRAINED_ROW_AND_IO), _)) => {
            let (row_len, json) = unpack_row_and_io(bytes)?;
            parse(&json[..row_len])
        }
        _ => parse(&payload(bytes)?),
    }
}

/// A change-log entry as stored (tag 6).
pub fn encode_change(change: &ChangeRef) -> Result<Vec<u8>, StoreError> {
    let (kind, project, id, flag) = match change {
        ChangeRef::Trace {
            project,
            id,
            created,
        } => (0, project, id, *created),
        ChangeRef::Observation {
            project,
            id,
            created,
        } => (1, project, id, *created),
        ChangeRef::Score { project, id } => (2, project, id, false),
        ChangeRef::TraceDeleted {
            project,
            id,
            expired,
        } => (3, project, id, *expired),
        ChangeRef::ScoreDeleted {
            project,
            id,
            expired,
        } => (4, project, id, *expired),
    };
    let project_len = u16::try_from(project.len())
        .map_err(|_| StoreError::Encode("project id longer than 64 KiB".into()))?;
    let mut out = Vec::with_capacity(5 + project.len() + id.len());
    out.extend_from_slice(&[TAG_CHANGE, kind, u8::from(flag)]);
    out.extend_from_slice(&project_len.to_le_bytes());
    out.extend_from_slice(project.as_bytes());
    out.extend_from_slice(id.as_bytes());
    Ok(out)
}

/// A change-log entry, in the binary form of `encode_change` or as JSON (schema versions 1–3).
pub fn decode_change(bytes: &[u8]) -> Result<ChangeRef, StoreError> {
    let Some((&TAG_CHANGE, rest)) = bytes.split_first() else {
        return decode_row(bytes);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("change-log entry: {what}"));
    let (&[kind, flag], rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| corrupt("too short"))?;
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| corrupt("too short"))?;
    let len = usize::from(u16::from_le_bytes(*len));
    if len > rest.len() {
        return Err(corrupt("project longer than the entry"));
    }
    let (project, id) = rest.split_at(len);
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| corrupt("not UTF-8"))
    };
    let (project, id) = (text(project)?, text(id)?);
    let flag = match flag {
        0 => false,
        1 => true,
        _ => return Err(corrupt("unknown flag")),
    };
    Ok(match kind {
        0 => ChangeRef::Trace {
            project,
            id,
            created: flag,
        },
        1 => ChangeRef::Observation {
            project,
            id,
            created: flag,
        },
        2 if !flag => ChangeRef::Score { project, id },
        3 => ChangeRef::TraceDeleted {
            project,
            id,
            expired: flag,
        },
        4 => ChangeRef::ScoreDeleted {
            project,
            id,
            expired: flag,
        },
        _ => return Err(corrupt("unknown kind")),
    })
}

/// The input and output of one trace or observation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Io {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

impl Io {
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }
}

#[cfg(test)]
pub fn encode_io(io: &Io) -> Result<Vec<u8>, StoreError> {
    encode_io_json(&io_json(io)?)
}

/// A payload's value from its JSON (`io_json`).
pub fn encode_io_json(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    tagged(json)
}

/// A payload from its plain JSON (`io_json`).
pub fn io_from_json(json: &[u8]) -> Result<Io, StoreError> {
    parse(json)
}

/// A payload as plain JSON, to attach to its row (`encode_record`): of an `Io`, or of
/// the writer's borrowed form of one (`{"input": …, "output": …}`, absent ones left out).
pub fn io_json(io: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(io).map_err(|e| StoreError::Encode(e.to_string()))
}

fn tagged(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    if json.len() < COMPRESS_AT {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(TAG_JSON);
        out.extend_from_slice(json);
        return Ok(out);
    }
    zstd_compress(json)
}

/// A stored payload value's plain JSON: `decode_io` without building the values.
pub fn io_json_of(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    payload(bytes).map(std::borrow::Cow::into_owned)
}

pub fn decode_io(bytes: &[u8]) -> Result<Io, StoreError> {
    parse(&payload(bytes)?)
}

fn payload(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    match bytes.split_first() {
        Some((&TAG_JSON, rest)) => Ok(std::borrow::Cow::Borrowed(rest)),
        Some((&TAG_ZSTD_DICT1_JSON, rest)) => {
            zstd_decompress(rest, None).map(std::borrow::Cow::Owned)
        }
        Some((&TAG_ZSTD_TRAINED_JSON, rest)) => {
            let (t, rest) = trained(rest)?;
            zstd_decompress(rest, Some(t)).map(std::borrow::Cow::Owned)
        }
        Some((&TAG_LZ4_JSON, rest)) => lz4_flex::decompress_size_prepended(rest)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| StoreError::Corrupt(format!("lz4: {e}"))),
        // Only row tables hold references, and their readers resolve them (`values`) first.
        Some((&TAG_VALUE_REF, _)) => Err(StoreError::Corrupt(
            "a value reference where a value belongs".into(),
        )),
        Some((tag, _)) => Err(StoreError::Corrupt(format!(
            "unknown value format tag {tag}"
        ))),
        None => Err(StoreError::Corrupt("empty value".into())),
    }
}

/// A reference to the value stored under `seq` in `record_values` (tag 9): the tag, then the
/// sequence number in LEB128 (3 bytes for the first two million values instead of 8).
pub struct ValueRef {
    buf: [u8; 11],
    len: usize,
}

impl ValueRef {
    pub fn new(seq: u64) -> ValueRef {
        let mut buf = [0u8; 11];
        buf[0] = TAG_VALUE_REF;
        let (mut v, mut len) = (seq, 1);
        while v >= 0x80 {
            buf[len] = (v as u8) | 0x80;
            v >>= 7;
            len += 1;
        }
        buf[len] = v as u8;
        ValueRef { buf, len: len + 1 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The sequence number a stored value refers to, or `None` for a value stored in place.
pub fn value_ref(bytes: &[u8]) -> Result<Option<u64>, StoreError> {
    let Some((&TAG_VALUE_REF, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let bad = || StoreError::Corrupt(format!("value reference {bytes:02x?}"));
    let mut seq = 0u64;
    for (i, &b) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        // The tenth byte holds the top bit of a u64 only.
        if i >= 10 || (b & 0x80 == 0) != last || (i == 9 && b > 1) {
            return Err(bad());
        }
        seq |= u64::from(b & 0x7f)
            .checked_shl(7 * i as u32)
            .ok_or_else(bad)?;
    }
    if rest.is_empty() {
        return Err(bad());
    }
    Ok(Some(seq))
}

/// What the by-trace observation index carries, so a trace's latency and cost can be computed
/// without loading its observations: start, end, total cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObsSummary {
    pub start: i64,
    pub end: Option<i64>,
    pub total_cost: Option<f64>,
}

/// The first byte of a compact summary: this marker in the high nibble, flags in the low one.
const SUMMARY_COMPACT: u8 = 0xb0;
/// The fixed-width summary written before: start, end and cost as 8 bytes each, then flags.
const SUMMARY_FIXED_LEN: usize = 25;

impl ObsSummary {
    /// `[0xb0 | flags][start, zigzag LEB128][end − start, zigzag LEB128, when there is an end]
    /// [cost f64 LE, when there is one]`: 12 bytes for a span, 20 for a generation, where the
    /// fixed-width form (exactly 25 bytes, still read) took 25. An encoding that would itself be
    /// 25 bytes long gets a zero byte appended, so the two never mix.
    pub fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.end.is_some()) | (u8::from(self.total_cost.is_some()) << 1);
        let mut out = Vec::with_capacity(SUMMARY_FIXED_LEN);
        out.push(SUMMARY_COMPACT | flags);
        put_zigzag(&mut out, self.start);
        if let Some(end) = self.end {
            put_zigzag(&mut out, end.wrapping_sub(self.start));
        }
        if let Some(cost) = self.total_cost {
            out.extend_from_slice(&cost.to_le_bytes());
        }
        if out.len() == SUMMARY_FIXED_LEN {
            out.push(0);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::Corrupt(format!("observation summary {b:02x?}"));
        if b.len() == SUMMARY_FIXED_LEN {
            return Ok(Self::decode_fixed(b));
        }
        let (&first, mut rest) = b.split_first().ok_or_else(bad)?;
        if first & 0xf0 != SUMMARY_COMPACT || first & 0x0c != 0 {
            return Err(bad());
        }
        let start = take_zigzag(&mut rest).ok_or_else(bad)?;
        let end = if first & 1 != 0 {
            Some(start.wrapping_add(take_zigzag(&mut rest).ok_or_else(bad)?))
        } else {
            None
        };
        let total_cost = if first & 2 != 0 {
            let (cost, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            rest = tail;
            Some(f64::from_le_bytes(*cost))
        } else {
            None
        };
        let padded = rest == [0] && b.len() == SUMMARY_FIXED_LEN + 1;
        if !rest.is_empty() && !padded {
            return Err(bad());
        }
        Ok(Self {
            start,
            end,
            total_cost,
        })
    }

    fn decode_fixed(arr: &[u8]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&arr[i..i + 8]);
            w
        };
        let flags = arr[24];
        Self {
            start: i64::from_le_bytes(word(0)),
            end: (flags & 1 != 0).then(|| i64::from_le_bytes(word(8))),
            total_cost: (flags & 2 != 0).then(|| f64::from_le_bytes(word(16))),
        }
    }
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// Reads a zigzag LEB128 number off the front of `b`; `None` when it is cut short or too long.
fn take_zigzag(b: &mut &[u8]) -> Option<i64> {
    let mut u = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        if i == 9 && byte > 1 {
            return None;
        }
        u |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((u >> 1) as i64) ^ -((u & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_references_round_trip_and_reject_garbage() {
        for seq in [0, 1, 127, 128, 1_260_000, u64::MAX - 1, u64::MAX] {
            let r = ValueRef::new(seq);
            assert_eq!(value_ref(r.as_bytes()).unwrap(), Some(seq), "{seq}");
        }
        assert_eq!(ValueRef::new(1_260_000).as_bytes().len(), 4);
        assert_eq!(value_ref(&[TAG_JSON, 1, 2]).unwrap(), None);
        let mut too_long = vec![TAG_VALUE_REF];
        too_long.extend([0xff; 10]);
        too_long.push(0);
        for bad in [
            &[TAG_VALUE_REF][..],
            &[TAG_VALUE_REF, 0x80],
            &[TAG_VALUE_REF, 0x01, 0x02],
            &[
                TAG_VALUE_REF,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0x02,
            ],
            &too_long,
        ] {
            assert!(value_ref(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn io_round_trips_small_and_large() {
        for n in [10, 5000] {
            let io = Io {
                input: Some(Value::String("x".repeat(n))),
                output: None,
            };
            let enc = encode_io(&io).unwrap();
            if n > COMPRESS_AT {
                assert_eq!(enc[0], TAG_ZSTD_DICT1_JSON);
                assert!(enc.len() < n);
            }
            assert_eq!(decode_io(&enc).unwrap(), io);
        }
    }

    #[test]
    fn a_row_carries_its_payload_and_reads_alone() {
        let row = serde_json::json!({"id": "o1", "name": "plan"});
        let io = Io {
            input: Some(Value::String("question ".repeat(50))),
            output: None,
        };
        let io_bytes = io_json(&io).unwrap();
        let value = encode_record(&row, Some(&io_bytes), |_, _| ()).unwrap();
        assert_eq!(value[0], TAG_ZSTD_ROW_AND_IO);
        assert!(value.len() < io_bytes.len() / 2, "{} bytes", value.len());
        assert_eq!(decode_row::<Value>(&value).unwrap(), row);
        assert_eq!(attached_io(&value).unwrap(), Some(io.clone()));
        let (row_json, io_part) = json_parts(&value).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&row_json).unwrap(), row);
        assert_eq!(io_part.as_deref(), Some(io_bytes.as_slice()));
        let plain = encode_row(&row).unwrap();
        assert_eq!(attached_io(&plain).unwrap(), None);
        assert_eq!(json_parts(&plain).unwrap().1, None);
        assert!(attached_io(&[TAG_ZSTD_ROW_AND_IO, 200, 0, 0, 0, 1]).is_err());
        assert!(decode_row::<Value>(&[TAG_ZSTD_ROW_AND_IO, 1]).is_err());
        let mut long_row = value.clone();
        long_row[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_row::<Value>(&long_row).is_err());
    }

    #[test]
    fn rows_with_a_payload_of_schema_version_2_still_read() {
        let row = serde_json::json!({"id": "o1", "name": "plan"});
        let io = Io {
            input: Some(Value::String("question ".repeat(50))),
            output: None,
        };
        let row_bytes = encode_row(&row).unwrap();
        let mut value = vec![TAG_ROW_WITH_IO];
        value.extend_from_slice(&(row_bytes.len() as u32).to_le_bytes());
        value.extend_from_slice(&row_bytes);
        value.extend_from_slice(&encode_io(&io).unwrap());
        assert_eq!(decode_row::<Value>(&value).unwrap(), row);
        assert_eq!(attached_io(&value).unwrap(), Some(io.clone()));
        let (row_json, io_part) = json_parts(&value).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&row_json).unwrap(), row);
        assert_eq!(io_part.unwrap(), io_json(&io).unwrap());
        assert!(attached_io(&[TAG_ROW_WITH_IO, 9, 0, 0, 0, 1]).is_err());
        assert!(decode_row::<Value>(&[TAG_ROW_WITH_IO, 1]).is_err());
    }

    #[test]
    fn values_of_schema_version_1_still_read() {
        let io = Io {
            input: Some(Value::String("hello ".repeat(200))),
            output: Some(serde_json::json!({"role": "assistant", "content": "hi"})),
        };
        let json = serde_json::to_vec(&io).unwrap();
        let mut lz4 = vec![TAG_LZ4_JSON];
        lz4.extend_from_slice(&lz4_flex::compress_prepend_size(&json));
        assert_eq!(decode_io(&lz4).unwrap(), io);
        let mut plain = vec![TAG_JSON];
        plain.extend_from_slice(&json);
        assert_eq!(decode_io(&plain).unwrap(), io);
    }

    #[test]
    fn dictionary_shrinks_a_typical_row() {
        let row = serde_json::json!({
            "id": "c8907eb2ec294948", "trace_id": "ede4d7d47ae07c2136724f289325bc54",
            "type": "GENERATION", "name": "plan", "start_time": 1764000000123456i64,
            "metadata": {"attributes": {"openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini", "llm.token_count.prompt": "157"}},
            "level": "DEFAULT", "environment": "default", "model": "gpt-4o-mini",
            "usage_details": {"input": 157, "output": 105, "total": 262},
            "created_at": 1764000000123456i64, "updated_at": 1764000000123456i64,
        });
        let json = serde_json::to_vec(&row).unwrap();
        let enc = encode_row(&row).unwrap();
        assert_eq!(enc[0], TAG_ZSTD_DICT1_JSON);
        assert!(
            enc.len() * 2 < json.len(),
            "{} bytes of JSON took {}",
            json.len(),
            enc.len()
        );
        assert_eq!(decode_row::<Value>(&enc).unwrap(), row);
    }

    fn every_change() -> Vec<ChangeRef> {
        let p = || "project-ü".to_string();
        let mut all = Vec::new();
        for flag in [false, true] {
            all.push(ChangeRef::Trace {
                project: p(),
                id: "t1".into(),
                created: flag,
            });
            all.push(ChangeRef::Observation {
                project: p(),
                id: "o1".into(),
                created: flag,
            });
            all.push(ChangeRef::TraceDeleted {
                project: p(),
                id: "t2".into(),
                expired: flag,
            });
            all.push(ChangeRef::ScoreDeleted {
                project: p(),
                id: "s2".into(),
                expired: flag,
            });
        }
        all.push(ChangeRef::Score {
            project: p(),
            id: String::new(),
        });
        all
    }

    #[test]
    fn change_entries_round_trip_in_binary_and_json_entries_still_read() {
        for change in every_change() {
            let bin = encode_change(&change).unwrap();
            assert_eq!(bin[0], TAG_CHANGE);
            assert_eq!(decode_change(&bin).unwrap(), change);
            // Schema versions 1–3 wrote entries like rows.
            let json = encode_row(&change).unwrap();
            assert!(
                bin.len() < json.len(),
                "{change:?}: {} vs {}",
                bin.len(),
                json.len()
            );
            assert_eq!(decode_change(&json).unwrap(), change);
        }
    }

    #[test]
    fn corrupt_change_entries_are_errors_not_panics() {
        let good = encode_change(&every_change()[1]).unwrap();
        for cut in 0..good.len() - 2 {
            // Cut inside the header or the project: the length no longer fits.
            assert!(decode_change(&good[..cut]).is_err(), "cut at {cut}");
        }
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            v
        };
        assert!(decode_change(&with(1, 9)).is_err(), "unknown kind");
        assert!(decode_change(&with(2, 2)).is_err(), "unknown flag");
        assert!(
            decode_change(&with(good.len() - 1, 0xff)).is_err(),
            "bad UTF-8"
        );
        let score = encode_change(&ChangeRef::Score {
            project: "p".into(),
            id: "s".into(),
        })
        .unwrap();
        let mut flagged = score.clone();
        flagged[2] = 1;
        assert!(
            decode_change(&flagged).is_err(),
            "a score change has no flag"
        );
    }

    /// Chat-like rows over a small vocabulary: what a deployment's values share.
    fn chat_rows(n: usize, seed: u64) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let text = dict::tests::chat_text(seed * 1_000_000 + i as u64, 120);
                serde_json::json!({
                    "id": format!("obs-{seed}-{i}"), "type": "GENERATION", "model": "gpt-4o-mini",
                    "input": [{"role": "system", "content": "You are a helpful support agent for Acme."},
                              {"role": "user", "content": text}],
                })
            })
            .collect()
    }

    fn trained_on(rows: &[Value]) -> &'static Trained {
        let mut data = Vec::new();
        let mut sizes = Vec::new();
        for r in rows {
            let json = serde_json::to_vec(r).unwrap();
            sizes.push(json.len());
            data.extend_from_slice(&json);
        }
        let bytes = zstd::dict::from_continuous(&data, &sizes, 16 * 1024).unwrap();
        dict::register(&bytes)
    }

    #[test]
    fn a_writer_compresses_with_its_trained_dictionary_and_any_thread_decodes() {
        let t = trained_on(&chat_rows(400, 1));
        let later = chat_rows(50, 2);
        let io_json = io_json(&Io {
            input: Some(later[1]["input"].clone()),
            output: None,
        })
        .unwrap();
        let (plain, with_io, builtin) = std::thread::scope(|s| {
            s.spawn(|| {
                let builtin = encode_row(&later[0]).unwrap();
                dict::attach_writer(Some(t.id), 1);
                (
                    encode_row(&later[0]).unwrap(),
                    encode_record(&later[1], Some(&io_json), |_, _| ()).unwrap(),
                    builtin,
                )
            })
            .join()
            .unwrap()
        });
        assert_eq!(builtin[0], TAG_ZSTD_DICT1_JSON);
        assert_eq!(plain[0], TAG_ZSTD_TRAINED_JSON);
        assert_eq!(with_io[0], TAG_ZSTD_TRAINED_ROW_AND_IO);
        assert_eq!(plain[1..9], t.id.to_le_bytes());
        assert!(
            plain.len() * 4 < builtin.len() * 3,
            "trained {} bytes, built-in {}",
            plain.len(),
            builtin.len()
        );
        // This thread never attached as a writer: it compresses with the built-in dictionary
        // and decodes either.
        assert_eq!(encode_row(&later[0]).unwrap()[0], TAG_ZSTD_DICT1_JSON);
        assert_eq!(decode_row::<Value>(&plain).unwrap(), later[0]);
        assert_eq!(decode_row::<Value>(&with_io).unwrap(), later[1]);
        let (row, io) = json_parts(&with_io).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&row).unwrap(), later[1]);
        assert_eq!(io.unwrap(), io_json);
        assert_eq!(
            attached_io(&with_io).unwrap().unwrap().input,
            Some(later[1]["input"].clone())
        );
    }

    #[test]
    fn a_value_naming_a_dictionary_the_file_does_not_hold_is_an_error() {
        let t = trained_on(&chat_rows(400, 3));
        let value = std::thread::scope(|s| {
            s.spawn(|| {
                dict::attach_writer(Some(t.id), 1);
                encode_row(&chat_rows(1, 4)[0]).unwrap()
            })
            .join()
            .unwrap()
        });
        let mut unknown = value.clone();
        unknown[1..9].copy_from_slice(&0x5eed_u64.to_le_bytes());
        let err = decode_row::<Value>(&unknown).unwrap_err();
        assert!(err.to_string().contains("does not hold"), "{err}");
        assert!(decode_row::<Value>(&value[..5]).is_err());
        assert!(decode_row::<Value>(&[TAG_ZSTD_TRAINED_ROW_AND_IO, 1, 2]).is_err());
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(decode_io(&[]).is_err());
        assert!(decode_io(&[9, 1, 2]).is_err());
        assert!(decode_io(&[TAG_LZ4_JSON, 255, 255, 255, 255, 1]).is_err());
        assert!(decode_io(&[TAG_ZSTD_DICT1_JSON, 255, 255, 255, 255, 1]).is_err());
        assert!(decode_io(&[TAG_ZSTD_DICT1_JSON, 10, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(decode_io(&[TAG_ZSTD_DICT1_JSON, 1]).is_err());
        assert!(ObsSummary::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn summaries_are_compact_round_trip_at_the_extremes_and_fixed_ones_still_read() {
        let span = ObsSummary {
            start: 1_795_000_000_000_000,
            end: Some(1_795_000_000_285_000),
            total_cost: None,
        };
        let generation = ObsSummary {
            total_cost: Some(0.0014525),
            ..span
        };
        assert_eq!(span.encode().len(), 12);
        assert_eq!(generation.encode().len(), 20);
        let mut cases = vec![span, generation];
        for start in [i64::MIN, -5, 0, 1, i64::MAX] {
            for end in [None, Some(i64::MIN), Some(start), Some(i64::MAX)] {
                for total_cost in [None, Some(0.0), Some(-1.5), Some(f64::MAX)] {
                    cases.push(ObsSummary {
                        start,
                        end,
                        total_cost,
                    });
                }
            }
        }
        for s in cases {
            let bytes = s.encode();
            assert_ne!(bytes.len(), SUMMARY_FIXED_LEN, "{s:?}");
            assert_eq!(ObsSummary::decode(&bytes).unwrap(), s, "{bytes:02x?}");
            // The fixed-width form of every summary reads the same.
            let mut fixed = [0u8; 25];
            fixed[..8].copy_from_slice(&s.start.to_le_bytes());
            fixed[8..16].copy_from_slice(&s.end.unwrap_or(i64::MIN).to_le_bytes());
            fixed[16..24].copy_from_slice(&s.total_cost.unwrap_or(0.0).to_le_bytes());
            fixed[24] = u8::from(s.end.is_some()) | (u8::from(s.total_cost.is_some()) << 1);
            assert_eq!(ObsSummary::decode(&fixed).unwrap(), s);
            // Cut short or with a byte too many, it is corrupt, never misread.
            assert!(ObsSummary::decode(&bytes[..bytes.len() - 1]).is_err() || bytes.len() == 26);
            let mut longer = bytes.clone();
            longer.push(7);
            if longer.len() != SUMMARY_FIXED_LEN {
                assert!(ObsSummary::decode(&longer).is_err(), "{longer:02x?}");
            }
        }
        assert!(ObsSummary::decode(&[]).is_err());
        assert!(ObsSummary::decode(&[0xa1, 2]).is_err());
    }

    #[test]
    fn summary_round_trips() {
        let s = ObsSummary {
            start: -5,
            end: Some(7),
            total_cost: Some(0.25),
        };
        assert_eq!(ObsSummary::decode(&s.encode()).unwrap(), s);
        let s = ObsSummary {
            start: 1,
            end: None,
            total_cost: None,
        };
        assert_eq!(ObsSummary::decode(&s.encode()).unwrap(), s);
    }
}
