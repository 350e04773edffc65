//! Extraction of a document's searchable text from JSON: payloads and metadata walked value
//! by value (keys left out, JSON inside strings walked too, blobs skipped), capped per field.
//! The same text comes from a parsed `Value` (highlighting, which holds records) and straight
//! from stored JSON bytes (indexing, which reads every record).
//!
//! Must not: tokenize (`text` does) or decide which field a text goes to (`schema`).

use serde_json::Value;

/// Longest string inside a payload that is not looked at if it is made only of base64/hex
/// characters: an encoded image or audio clip, not prose.
const BLOB_MIN_BYTES: usize = 256;

/// Searchable text of a JSON payload: every string and number value, walked depth first, keys
/// left out, joined by newlines and cut at `cap` bytes. Strings that hold JSON (some SDKs send
/// chat messages pre-serialised) are walked too; base64/hex blobs and `data:` URIs are skipped.
pub fn json_text(value: &Value, cap: usize) -> String {
    let mut out = String::new();
    walk(value, cap, &mut out, 0);
    out
}

/// `json_text` of several values (metadata map), in order.
pub fn json_values_text<'a>(values: impl Iterator<Item = &'a Value>, cap: usize) -> String {
    let mut out = String::new();
    for v in values {
        walk(v, cap, &mut out, 0);
    }
    out
}

/// Plain text cut at `cap` bytes (on a character boundary).
pub fn capped(text: &str, cap: usize) -> String {
    let mut out = String::new();
    push(&mut out, text, cap);
    out
}

const MAX_DEPTH: usize = 64;

fn walk(value: &Value, cap: usize, out: &mut String, depth: usize) {
    if out.len() >= cap || depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::String(s) => string(s, cap, out, depth),
        Value::Number(n) => push(out, &n.to_string(), cap),
        Value::Array(items) => {
            for v in items {
                walk(v, cap, out, depth + 1);
            }
        }
        Value::Object(map) => {
            for v in map.values() {
                walk(v, cap, out, depth + 1);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// A string value: skipped when a blob, walked when it holds JSON, else pushed.
fn string(s: &str, cap: usize, out: &mut String, depth: usize) {
    if is_blob(s) {
        return;
    }
    let trimmed = s.trim_start();
    // JSON inside a string is user text, duplicate keys and all: it goes through `Value` so
    // that it is walked exactly as a parsed payload would be.
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && s.len() <= cap
        && let Ok(inner) = serde_json::from_str::<Value>(s)
    {
        walk(&inner, cap, out, depth + 1);
        return;
    }
    push(out, s, cap);
}

/// The searchable text of a stored payload's JSON (`{"input": .., "output": ..}`, either
/// absent; empty bytes are no payload): `json_text` of each part, capped at `input_cap` and
/// `output_cap`, read straight from the bytes. Indexing reads every payload, and building a
/// `Value` tree only to walk it once was most of that work. The stored JSON was written by
/// serde_json from `Value`s, so its object keys are unique and in the `Value`'s order: walking
/// it in document order gives what walking the parsed value does.
pub fn payload_text(
    json: &[u8],
    input_cap: usize,
    output_cap: usize,
) -> Result<(String, String), serde_json::Error> {
    if json.is_empty() {
        return Ok((String::new(), String::new()));
    }
    // A part's text is never longer than the JSON it comes from: sized once, instead of
    // growing by doubling (realloc was ~15 % of the indexer thread).
    let mut texts = (
        String::with_capacity(json.len().min(input_cap)),
        String::with_capacity(json.len().min(output_cap)),
    );
    let mut de = serde_json::Deserializer::from_slice(json);
    serde::Deserializer::deserialize_map(
        &mut de,
        PayloadParts {
            input: Walker::new(&mut texts.0, input_cap),
            output: Walker::new(&mut texts.1, output_cap),
        },
    )?;
    de.end()?;
    Ok(texts)
}

/// `json_values_text` of a JSON object's values (a record's metadata), capped at `cap`, taken
/// while the object is parsed (as `payload_text`).
pub fn metadata_text<'de, D: serde::Deserializer<'de>>(
    d: D,
    cap: usize,
) -> Result<String, D::Error> {
    let mut out = String::new();
    d.deserialize_map(Values {
        w: Walker::new(&mut out, cap),
    })?;
    Ok(out)
}

/// Visits an object, walking each value as a top-level one.
struct Values<'a> {
    w: Walker<'a>,
}

impl<'de> serde::de::Visitor<'de> for Values<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<Key>()?.is_some() {
            map.next_value_seed(Walk {
                w: &mut self.w,
                depth: 0,
            })?;
        }
        Ok(())
    }
}

/// Where one payload part's text goes while the JSON streams by.
struct Walker<'a> {
    out: &'a mut String,
    cap: usize,
    /// Formats numbers, reused.
    number: String,
}

impl<'a> Walker<'a> {
    fn new(out: &'a mut String, cap: usize) -> Walker<'a> {
        Walker {
            out,
            cap,
            number: String::new(),
        }
    }
}

/// Visits the payload object, walking `input` and `output` and skipping anything else.
struct PayloadParts<'a> {
    input: Walker<'a>,
    output: Walker<'a>,
}

impl<'de> serde::de::Visitor<'de> for PayloadParts<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a payload object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(part) = map.next_key::<Part>()? {
            let walker = match part {
                Part::Input => &mut self.input,
                Part::Output => &mut self.output,
                Part::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            map.next_value_seed(Walk {
                w: walker,
                depth: 0,
            })?;
        }
        Ok(())
    }
}

enum Part {
    Input,
    Output,
    Other,
}

impl<'de> serde::Deserialize<'de> for Part {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Part, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Part;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a payload part")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Part, E> {
                Ok(match s {
                    "input" => Part::Input,
                    "output" => Part::Output,
                    _ => Part::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// One JSON value at `depth`, walked as `walk` walks its `Value`.
struct Walk<'w, 'a> {
    w: &'w mut Walker<'a>,
    depth: usize,
}

impl Walk<'_, '_> {
    /// Whether this value is looked at (`walk`'s cap and depth checks); a value that is not
    /// is still parsed, so malformed JSON fails as it does when parsed into a `Value`.
    fn open(&self) -> bool {
        self.w.out.len() < self.w.cap && self.depth <= MAX_DEPTH
    }

    fn number(self, n: serde_json::Number) {
        if self.open() {
            use std::fmt::Write;
            let w = self.w;
            w.number.clear();
            // Writing to a String cannot fail.
            let _ = write!(w.number, "{n}");
            push(w.out, &w.number, w.cap);
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.number(n.into());
        Ok(())
    }

    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.number(n.into());
        Ok(())
    }

    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        // `Value` keeps a non-finite number (never parsed from JSON) as null.
        if let Some(n) = serde_json::Number::from_f64(n) {
            self.number(n);
        }
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        if self.open() {
            string(s, self.w.cap, self.w.out, self.depth);
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        while seq
            .next_element_seed(Walk {
                w: &mut *self.w,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        while map.next_key::<Key>()?.is_some() {
            map.next_value_seed(Walk {
                w: &mut *self.w,
                depth,
            })?;
        }
        Ok(())
    }
}

/// An object key, left out of the text but parsed as strictly as `Value` parses it.
struct Key;

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Key, E> {
                Ok(Key)
            }
        }
        d.deserialize_str(V)
    }
}

fn push(out: &mut String, s: &str, cap: usize) {
    if s.is_empty() || out.len() >= cap {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let room = cap.saturating_sub(out.len());
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&s[..end]);
}

fn is_blob(s: &str) -> bool {
    if s.starts_with("data:") && s[..s.len().min(100)].contains(";base64,") {
        return true;
    }
    s.len() >= BLOB_MIN_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_walks_values_not_keys_and_skips_blobs() {
        let v = json!({
            "messages": [
                {"role": "user", "content": "Hello Sea"},
                {"role": "tool", "content": "{\"city\": \"Berlin\", \"n\": 3}"},
            ],
            "image": format!("data:image/png;base64,{}", "A".repeat(5000)),
            "raw": "QUJD".repeat(200),
            "flag": true,
        });
        let text = json_text(&v, 10_000);
        assert_eq!(text, "user\nHello Sea\ntool\nBerlin\n3");
        assert!(!text.contains("messages") && !text.contains("city"));
    }

    /// A random JSON value of every shape `walk` treats apart: nesting (past `MAX_DEPTH`),
    /// escapes, numbers of each kind, non-Latin text, JSON inside strings, blobs.
    fn random_value(next: &mut impl FnMut(usize) -> usize, depth: usize) -> Value {
        const STRINGS: [&str; 14] = [
            "Hello Sea",
            "quote \" backslash \\ tab \t newline \n",
            "大海蛇 Größe مكتبه 😀",
            "  {\"city\": \"Berlin\", \"n\": [1, 2.5, -3], \"city\": \"Bonn\"}",
            "[\"inner\", {\"deep\": \"text\"}]",
            "{not json",
            "[1, 2",
            "",
            " ",
            "\u{0}control\u{1f}",
            "e\u{301}",
            "data:image/png;base64,AAAA",
            "line one\r\nline two",
            "ä",
        ];
        let leaf = |next: &mut dyn FnMut(usize) -> usize| match next(9) {
            0 => Value::Null,
            1 => Value::Bool(next(2) == 0),
            2 => json!(next(1_000_000) as u64 * 1_000_003),
            3 => json!(-(next(1_000_000) as i64) - 1),
            4 => json!(next(1_000_000) as f64 / 7.0 - 1000.0),
            5 => json!(u64::MAX - next(10) as u64),
            6 => json!("QUJD".repeat(64 + next(4))),
            _ => Value::String(STRINGS[next(STRINGS.len())].repeat(1 + next(3))),
        };
        if depth > 70 || next(3) == 0 {
            return leaf(next);
        }
        if next(2) == 0 {
            Value::Array(
                (0..next(4))
                    .map(|_| random_value(next, depth + 1))
                    .collect(),
            )
        } else {
            Value::Object(
                (0..next(4))
                    .map(|k| (format!("k{k}"), random_value(next, depth + 1)))
                    .collect(),
            )
        }
    }

    #[test]
    fn payload_text_from_bytes_is_the_text_of_the_parsed_payload() {
        use crate::store::Io;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let mut deep = json!("bottom");
        for i in 0..100 {
            deep = if i % 2 == 0 {
                json!([deep, i])
            } else {
                json!({"k": deep, "n": "x"})
            };
        }
        let mut payloads = vec![
            Io::default(),
            Io {
                input: Some(deep.clone()),
                output: Some(json!({"z": 1, "a": [2, "two"]})),
            },
        ];
        for _ in 0..3000 {
            let mut part = || (next(4) > 0).then(|| random_value(&mut next, 0));
            let (input, output) = (part(), part());
            payloads.push(Io { input, output });
        }
        for (i, io) in payloads.iter().enumerate() {
            let json = serde_json::to_vec(io).unwrap();
            // What indexing walked before: the stored bytes parsed (floats parse back to
            // neighbours of what was written, the same ones either way).
            let io: Io = serde_json::from_slice(&json).unwrap();
            let caps = [(64 * 1024, 64 * 1024), (1 + i % 97, 1 + i % 13), (0, 5)];
            for (input_cap, output_cap) in caps {
                let text = |v: &Option<Value>, cap| {
                    v.as_ref().map_or_else(String::new, |v| json_text(v, cap))
                };
                assert_eq!(
                    payload_text(&json, input_cap, output_cap).unwrap(),
                    (text(&io.input, input_cap), text(&io.output, output_cap)),
                    "{io:?} caps {input_cap}/{output_cap}"
                );
            }
        }
        assert_eq!(payload_text(b"", 10, 10).unwrap(), Default::default());
        assert_eq!(
            payload_text(
                br#"{"output": "b", "other": {"x": 1}, "input": "a"}"#,
                10,
                10
            )
            .unwrap(),
            ("a".to_string(), "b".to_string())
        );
    }

    #[test]
    fn payload_text_fails_where_parsing_the_payload_fails() {
        let bad: [&[u8]; 8] = [
            br#"{"input": [1, 2}"#,
            br#"{"input": "a" "#,
            br#"{"input": "\ud800"}"#,
            br#"{"input": "\x"}"#,
            b"{\"input\": \"\x01\"}",
            br#"{"input": {"a\q": 1}}"#,
            br#"{"input": 1e400}"#,
            br#"{"input": 1} trailing"#,
        ];
        for json in bad {
            assert!(
                serde_json::from_slice::<crate::store::Io>(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
            assert!(
                payload_text(json, 100, 100).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        // Past the cap the rest is still parsed, as a `Value` would be.
        let late = br#"{"input": ["aaaa", "bbbb", {"k": "\ud800"}]}"#;
        assert!(payload_text(late, 2, 2).is_err());
    }

    #[test]
    fn json_text_is_capped_on_a_char_boundary() {
        let v = json!(["ä".repeat(100)]);
        let text = json_text(&v, 51);
        assert!(text.len() <= 51);
        assert!(text.chars().all(|c| c == 'ä'));
    }
}
