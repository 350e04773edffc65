//! Value encoding for redb rows: a format tag byte, then the payload.
//!
//! Rows are JSON (tag 1) so that `serde_json::Value` fields (metadata, model parameters) round-trip
//! without a schema per field. Input/output payloads are kept apart from rows and compressed with
//! LZ4 once they are large enough for it to pay (tag 2), so that scans over rows never pay for
//! multi-megabyte prompts.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::StoreError;

const TAG_JSON: u8 = 1;
const TAG_LZ4_JSON: u8 = 2;
/// Below this size compression costs more than it saves.
const COMPRESS_AT: usize = 512;

/// A row as JSON, LZ4-compressed when large enough to pay: a record's field names and
/// OTLP attribute metadata repeat inside it, so big rows shrink by about a third and the
/// B-tree holds more of them per page.
pub fn encode_row<T: Serialize>(row: &T) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(row).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(tagged(&json))
}

pub fn decode_row<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let payload = payload(bytes)?;
    serde_json::from_slice(&payload).map_err(|e| StoreError::Corrupt(e.to_string()))
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
    let json = serde_json::to_vec(io).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(tagged(&json))
}

fn tagged(json: &[u8]) -> Vec<u8> {
    if json.len() < COMPRESS_AT {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(TAG_JSON);
        out.extend_from_slice(json);
        return out;
    }
    let mut out = vec![TAG_LZ4_JSON];
    out.extend_from_slice(&lz4_flex::compress_prepend_size(json));
    out
}

pub fn decode_io(bytes: &[u8]) -> Result<Io, StoreError> {
    decode_row(bytes)
}

fn payload(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    match bytes.split_first() {
        Some((&TAG_JSON, rest)) => Ok(std::borrow::Cow::Borrowed(rest)),
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
                assert_eq!(enc[0], TAG_LZ4_JSON);
                assert!(enc.len() < n);
            }
            assert_eq!(decode_io(&enc).unwrap(), io);
        }
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(decode_io(&[]).is_err());
        assert!(decode_io(&[9, 1, 2]).is_err());
        assert!(decode_io(&[TAG_LZ4_JSON, 255, 255, 255, 255, 1]).is_err());
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
