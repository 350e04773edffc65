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

use std::cell::RefCell;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::StoreError;

const TAG_JSON: u8 = 1;
const TAG_LZ4_JSON: u8 = 2;
const TAG_ZSTD_DICT1_JSON: u8 = 3;
const TAG_ROW_WITH_IO: u8 = 4;
const TAG_ZSTD_ROW_AND_IO: u8 = 5;
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

/// Appends `[uncompressed length u32 LE][zstd frame of src]` to `out`.
fn zstd_compress_into(src: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
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
        out.extend_from_slice(&len.to_le_bytes());
        // Compressed straight into the value: no intermediate buffer to allocate and copy.
        let at = out.len();
        out.resize(at + zstd::zstd_safe::compress_bound(src.len()), 0);
        let n = c.compress_to_buffer(src, &mut out[at..]).map_err(err)?;
        out.truncate(at + n);
        Ok(())
    })
}

fn zstd_compress(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    out.push(TAG_ZSTD_DICT1_JSON);
    zstd_compress_into(json, &mut out)?;
    Ok(out)
}

fn zstd_decompress(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
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

/// A row value with a payload attached (tag 5): `io_json` is the payload's JSON (`io_json`).
pub fn encode_row_with_io<T: Serialize>(row: &T, io_json: &[u8]) -> Result<Vec<u8>, StoreError> {
    with_json(row, |json| {
        let row_len = u32::try_from(json.len())
            .map_err(|_| StoreError::Encode("row larger than 4 GiB".into()))?;
        json.extend_from_slice(io_json);
        let mut out = Vec::with_capacity(16 + json.len() / 2);
        out.push(TAG_ZSTD_ROW_AND_IO);
        out.extend_from_slice(&row_len.to_le_bytes());
        zstd_compress_into(json, &mut out)?;
        Ok(out)
    })
}

/// A stored value's row JSON and, when a payload is attached (tags 4 and 5), the payload's JSON.
pub fn json_parts(bytes: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), StoreError> {
    match bytes.split_first() {
        Some((&TAG_ROW_WITH_IO, _)) => {
            let (row, io) = split_tag4(bytes)?;
            Ok((payload(row)?.into_owned(), Some(payload(io)?.into_owned())))
        }
        Some((&TAG_ZSTD_ROW_AND_IO, rest)) => {
            let (row_len, mut json) = unpack_tag5(rest)?;
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
        Some((&TAG_ZSTD_ROW_AND_IO, rest)) => {
            let (row_len, json) = unpack_tag5(rest)?;
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

/// A tag-5 value (after its tag): the row's length and the JSON of row and payload.
fn unpack_tag5(rest: &[u8]) -> Result<(usize, Vec<u8>), StoreError> {
    let (row_len, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| StoreError::Corrupt("row with payload: too short".into()))?;
    let row_len = u32::from_le_bytes(*row_len) as usize;
    let json = zstd_decompress(body)?;
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
        Some((&TAG_ZSTD_ROW_AND_IO, rest)) => {
            let (row_len, json) = unpack_tag5(rest)?;
            parse(&json[..row_len])
        }
        _ => parse(&payload(bytes)?),
    }
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

pub fn encode_io(io: &Io) -> Result<Vec<u8>, StoreError> {
    tagged(&io_json(io)?)
}

/// A payload from its plain JSON (`io_json`).
pub fn io_from_json(json: &[u8]) -> Result<Io, StoreError> {
    parse(json)
}

/// A payload as plain JSON, to attach to its row (`encode_row_with_io`).
pub fn io_json(io: &Io) -> Result<Vec<u8>, StoreError> {
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
        Some((&TAG_ZSTD_DICT1_JSON, rest)) => zstd_decompress(rest).map(std::borrow::Cow::Owned),
        Some((&TAG_LZ4_JSON, rest)) => lz4_flex::decompress_size_prepended(rest)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| StoreError::Corrupt(format!("lz4: {e}"))),
        Some((tag, _)) => Err(StoreError::Corrupt(format!(
            "unknown value format tag {tag}"
        ))),
        None => Err(StoreError::Corrupt("empty value".into())),
    }
}

/// What the by-trace observation index carries, so a trace's latency and cost can be computed
/// without loading its observations: start, end, total cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObsSummary {
    pub start: i64,
    pub end: Option<i64>,
    pub total_cost: Option<f64>,
}

impl ObsSummary {
    pub fn encode(&self) -> [u8; 25] {
        let mut out = [0u8; 25];
        out[..8].copy_from_slice(&self.start.to_le_bytes());
        out[8..16].copy_from_slice(&self.end.unwrap_or(i64::MIN).to_le_bytes());
        out[16..24].copy_from_slice(&self.total_cost.unwrap_or(0.0).to_le_bytes());
        out[24] = u8::from(self.end.is_some()) | (u8::from(self.total_cost.is_some()) << 1);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let arr: &[u8; 25] = b
            .try_into()
            .map_err(|_| StoreError::Corrupt("observation summary has wrong length".into()))?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&arr[i..i + 8]);
            w
        };
        let flags = arr[24];
        Ok(Self {
            start: i64::from_le_bytes(word(0)),
            end: (flags & 1 != 0).then(|| i64::from_le_bytes(word(8))),
            total_cost: (flags & 2 != 0).then(|| f64::from_le_bytes(word(16))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let value = encode_row_with_io(&row, &io_bytes).unwrap();
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
