//! Text analysis: the one tokenizer every language goes through, and the extraction of
//! searchable text from JSON payloads.
//!
//! Tokenization rules (the index, the query parser and the highlighter all use them, so a
//! query matches exactly what was indexed):
//! - Runs of letters and digits are words, lowercased and ASCII-folded (`Straße` → `strasse`,
//!   `Größe` → `grosse`, `café` → `cafe`). Arabic words are normalised (diacritics and tatweel
//!   removed, alef/yeh/teh-marbuta variants unified).
//! - Scripts written without spaces (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer, Myanmar)
//!   are cut into overlapping bigrams; the index also keeps each character as a unigram at the
//!   bigram's position, so a one-character query finds it. A run of n characters occupies n
//!   positions on both sides, so phrases that mix scripts line up.
//! - Tokens longer than `MAX_TOKEN_BYTES` are dropped (hashes, base64 fragments).

use serde_json::Value;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Longest token kept, in bytes after folding.
pub const MAX_TOKEN_BYTES: usize = 64;
/// Longest keyword (model, tag, user id...) indexed, in bytes.
pub const MAX_KEYWORD_BYTES: usize = 256;
/// Longest string inside a payload that is not looked at if it is made only of base64/hex
/// characters: an encoded image or audio clip, not prose.
const BLOB_MIN_BYTES: usize = 256;

/// The analyzer documents are indexed with (unigrams and bigrams for CJK).
pub fn index_analyzer() -> TextAnalyzer {
    analyzer(true)
}

/// The analyzer queries are tokenized with (bigrams only, unigrams for one-character runs).
pub fn query_analyzer() -> TextAnalyzer {
    analyzer(false)
}

/// Keywords (model, type, level, tags, environment...): the whole value, lowercased.
pub fn keyword_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .build()
}

fn analyzer(unigrams: bool) -> TextAnalyzer {
    TextAnalyzer::from(MultilingualTokenizer::new(unigrams))
}

/// Tokens of `text` through `analyzer`: (byte range in `text`, term).
pub fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |t: &Token| out.push((t.offset_from, t.offset_to, t.text.clone())));
    out
}

/// Splits, normalises, lowercases and folds in one pass, reusing its buffers from one text to
/// the next: indexing spends most of its time here. Terms are exactly what tantivy's
/// `LowerCaser` then `AsciiFoldingFilter` make of each word; words whose characters have no
/// case and nothing to fold (ASCII after lowercasing, Arabic, the bigram scripts) skip them.
#[derive(Clone)]
struct MultilingualTokenizer {
    unigrams: bool,
    buffers: Buffers,
}

#[derive(Clone)]
struct Buffers {
    /// The characters of the current bigram run, with their byte offsets.
    run: Vec<(usize, char)>,
    /// The current word, normalised but not yet lowercased.
    word: String,
    /// The two-letter umlaut spelling of the current word, once lowercased and folded.
    spelled: String,
    /// Lowercases and folds words that need it (tantivy's filters, applied to one word).
    fold: TextAnalyzer,
}

impl MultilingualTokenizer {
    fn new(unigrams: bool) -> MultilingualTokenizer {
        MultilingualTokenizer {
            unigrams,
            buffers: Buffers {
                run: Vec::new(),
                word: String::new(),
                spelled: String::new(),
                fold: TextAnalyzer::builder(RawTokenizer::default())
                    .filter(LowerCaser)
                    .filter(AsciiFoldingFilter)
                    .build(),
            },
        }
    }
}

impl Tokenizer for MultilingualTokenizer {
    type TokenStream<'a> = MultilingualStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MultilingualStream<'a> {
        self.buffers.run.clear();
        MultilingualStream {
            text,
            cursor: 0,
            position: 0,
            unigrams: self.unigrams,
            pending: Pending::Nothing,
            buffers: &mut self.buffers,
            token: Token::default(),
        }
    }
}

/// Tokens still to emit from what the stream last read.
enum Pending {
    Nothing,
    /// The current word's umlaut spelling (in `Buffers::spelled`), at the word's position.
    Spelled,
    /// The bigram run in `Buffers::run`, which starts at `position`: next is the unigram of
    /// character `k` (if the run emits unigrams) or, when `pair`, the bigram starting there.
    Run {
        position: usize,
        k: usize,
        pair: bool,
    },
}

struct MultilingualStream<'a> {
    text: &'a str,
    /// Byte offset of the first character not read yet.
    cursor: usize,
    /// Position of the next word or run.
    position: usize,
    unigrams: bool,
    pending: Pending,
    buffers: &'a mut Buffers,
    token: Token,
}

impl MultilingualStream<'_> {
    /// Emits the next token of the current bigram run, if any is left.
    fn next_in_run(&mut self) -> bool {
        let run = &self.buffers.run;
        let end_of = |k: usize| run.get(k).map_or(self.cursor, |(o, _)| *o);
        while let Pending::Run { position, k, pair } = self.pending {
            if k >= run.len() {
                self.pending = Pending::Nothing;
                return false;
            }
            if !pair {
                self.pending = Pending::Run {
                    position,
                    k,
                    pair: true,
                };
                if self.unigrams {
                    set(&mut self.token, end_of(k), end_of(k + 1), position + k);
                    self.token.text.push(run[k].1);
                    return true;
                }
                continue;
            }
            self.pending = Pending::Run {
                position,
                k: k + 1,
                pair: false,
            };
            if k + 1 < run.len() {
                set(&mut self.token, end_of(k), end_of(k + 2), position + k);
                self.token.text.push(run[k].1);
                self.token.text.push(run[k + 1].1);
                return true;
            }
        }
        false
    }

    /// Reads the word starting at the cursor into `token` (lowercased and folded) and its
    /// umlaut spelling into `Buffers::spelled`; false if it normalises to nothing.
    fn read_word(&mut self) -> bool {
        let start = self.cursor;
        let rest = &self.text[start..];
        let end = rest
            .char_indices()
            .find(|(_, c)| !matches!(class(*c), Class::Word | Class::Mark))
            .map_or(self.text.len(), |(i, _)| start + i);
        self.cursor = end;
        let raw = &self.text[start..end];
        set(&mut self.token, start, end, self.position);
        let mut spelled = false;
        if raw.is_ascii() {
            self.token.text.push_str(raw);
            self.token.text.make_ascii_lowercase();
        } else {
            let word = &mut self.buffers.word;
            word.clear();
            word.extend(raw.chars().filter_map(normalize_char));
            if word.is_empty() {
                return false;
            }
            if word.chars().all(caseless) {
                self.token.text.push_str(word);
            } else {
                fold_into(&mut self.buffers.fold, word, &mut self.token.text);
            }
            // German writes ä/ö/ü as ae/oe/ue where umlauts are missing (keyboards, URLs):
            // the indexed word also carries that spelling, so "Groesse" finds "Größe" as
            // "Grosse" does (ascii folding gives the latter).
            if self.unigrams && word.chars().any(is_umlaut) {
                let spelled_out: String = umlauts_spelled_out(word);
                fold_into(
                    &mut self.buffers.fold,
                    &spelled_out,
                    &mut self.buffers.spelled,
                );
                spelled = true;
            }
        }
        self.position += 1;
        if spelled {
            self.pending = Pending::Spelled;
        }
        true
    }
}

impl TokenStream for MultilingualStream<'_> {
    fn advance(&mut self) -> bool {
        loop {
            match self.pending {
                Pending::Nothing => {}
                Pending::Spelled => {
                    self.pending = Pending::Nothing;
                    if self.buffers.spelled.len() <= MAX_TOKEN_BYTES {
                        std::mem::swap(&mut self.token.text, &mut self.buffers.spelled);
                        return true;
                    }
                }
                Pending::Run { .. } => {
                    if self.next_in_run() {
                        return true;
                    }
                }
            }
            let Some(c) = self.text[self.cursor..].chars().next() else {
                return false;
            };
            match class(c) {
                Class::Separator | Class::Mark => self.cursor += c.len_utf8(),
                Class::Word => {
                    if self.read_word() && self.token.text.len() <= MAX_TOKEN_BYTES {
                        return true;
                    }
                }
                Class::Bigram => {
                    let run = &mut self.buffers.run;
                    run.clear();
                    let start = self.cursor;
                    run.extend(
                        self.text[start..]
                            .char_indices()
                            .take_while(|(_, c)| class(*c) == Class::Bigram)
                            .map(|(i, c)| (start + i, c)),
                    );
                    self.cursor = run.last().map_or(start, |(o, c)| o + c.len_utf8());
                    let position = self.position;
                    self.position += run.len();
                    if run.len() == 1 {
                        set(&mut self.token, start, self.cursor, position);
                        self.token.text.push(c);
                        return true;
                    }
                    self.pending = Pending::Run {
                        position,
                        k: 0,
                        pair: false,
                    };
                }
            }
        }
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

/// Points `token` at a new term (its text emptied, to be filled in).
fn set(token: &mut Token, from: usize, to: usize, position: usize) {
    token.offset_from = from;
    token.offset_to = to;
    token.position = position;
    token.position_length = 1;
    token.text.clear();
}

/// `word` lowercased and folded by tantivy's filters, into `out`.
fn fold_into(fold: &mut TextAnalyzer, word: &str, out: &mut String) {
    out.clear();
    let mut stream = fold.token_stream(word);
    if stream.advance() {
        out.push_str(&stream.token().text);
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Separator,
    Word,
    /// Continues a word but never starts one (combining marks).
    Mark,
    Bigram,
}

fn class(c: char) -> Class {
    if c.is_ascii() {
        return if c.is_ascii_alphanumeric() {
            Class::Word
        } else {
            Class::Separator
        };
    }
    // Every character of every indexed text is classified: outside ASCII, the standard
    // library's Unicode tables cost a search per character, a table of the BMP one load.
    static BMP: std::sync::OnceLock<Box<[Class]>> = std::sync::OnceLock::new();
    let bmp = BMP.get_or_init(|| {
        (0..0x1_0000u32)
            .map(|u| char::from_u32(u).map_or(Class::Separator, unicode_class))
            .collect()
    });
    bmp.get(c as usize)
        .copied()
        .unwrap_or_else(|| unicode_class(c))
}

/// `class` of a character outside ASCII, from the Unicode tables.
fn unicode_class(c: char) -> Class {
    let u = c as u32;
    let bigram = matches!(u,
        0x3005 | 0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF | 0xFF66..=0xFF9F | 0x20000..=0x2FA1F // Han, kana
        | 0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF // Hangul
        | 0x0E00..=0x0EFF | 0x1000..=0x109F | 0x1780..=0x17FF // Thai, Lao, Myanmar, Khmer
    );
    if bigram {
        Class::Bigram
    } else if is_mark(u) {
        Class::Mark
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Separator
    }
}

/// Characters that lowercasing and folding leave alone (a test checks every one against
/// tantivy's filters): the Arabic block and the bigram scripts.
fn caseless(c: char) -> bool {
    matches!(c as u32, 0x0600..=0x06FF) || class(c) == Class::Bigram
}

/// Combining marks that sit inside words and are dropped from terms: Latin combining accents,
/// Arabic harakat, zero-width joiners.
fn is_mark(u: u32) -> bool {
    matches!(u, 0x0300..=0x036F | 0x0610..=0x061A | 0x064B..=0x065F | 0x0670 | 0x06D6..=0x06ED
        | 0x200C | 0x200D)
}

/// Unifies Arabic letter variants so spelling variants of one word meet.
fn normalize_char(c: char) -> Option<char> {
    let u = c as u32;
    if is_mark(u) || u == 0x0640 {
        return None; // tatweel is only stretching
    }
    Some(match c {
        'أ' | 'إ' | 'آ' | 'ٱ' => 'ا',
        'ى' => 'ي',
        'ة' => 'ه',
        other => other,
    })
}

fn is_umlaut(c: char) -> bool {
    matches!(c, 'ä' | 'ö' | 'ü' | 'Ä' | 'Ö' | 'Ü')
}

/// `word` with German umlauts written as two letters.
fn umlauts_spelled_out(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    for c in word.chars() {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'Ä' => out.push_str("Ae"),
            'Ö' => out.push_str("Oe"),
            'Ü' => out.push_str("Ue"),
            other => out.push(other),
        }
    }
    out
}

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
    let mut texts = (String::new(), String::new());
    if json.is_empty() {
        return Ok(texts);
    }
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

/// A keyword value as indexed: at most `MAX_KEYWORD_BYTES`, else left out.
pub fn keyword(value: &str) -> Option<&str> {
    (!value.is_empty() && value.len() <= MAX_KEYWORD_BYTES).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn indexed_umlauts_also_carry_their_two_letter_spelling() {
        let mut a = index_analyzer();
        assert_eq!(
            terms(&mut a, "Größe Übung Haus"),
            ["grosse", "groesse", "ubung", "uebung", "haus"]
        );
        // Both spellings sit at the word's position, so phrases still match.
        let positions: Vec<usize> = {
            let mut out = Vec::new();
            let mut stream = a.token_stream("Größe Haus");
            stream.process(&mut |t: &Token| out.push(t.position));
            out
        };
        assert_eq!(positions, [0, 0, 1]);
    }

    fn terms(a: &mut TextAnalyzer, text: &str) -> Vec<String> {
        tokens(a, text).into_iter().map(|t| t.2).collect()
    }

    #[test]
    fn latin_words_are_lowercased_and_folded() {
        let mut a = query_analyzer();
        assert_eq!(
            terms(&mut a, "Die Straße, GRÖSSE & Größe: café!"),
            ["die", "strasse", "grosse", "grosse", "cafe"]
        );
        // Decomposed accents (NFD) meet their composed form.
        assert_eq!(terms(&mut a, "cafe\u{301}"), ["cafe"]);
    }

    #[test]
    fn cjk_runs_become_bigrams_with_unigrams_at_index_time() {
        let mut a = index_analyzer();
        assert_eq!(terms(&mut a, "大海蛇"), ["大", "大海", "海", "海蛇", "蛇"]);
        let mut q = query_analyzer();
        assert_eq!(terms(&mut q, "大海蛇"), ["大海", "海蛇"]);
        assert_eq!(terms(&mut q, "蛇"), ["蛇"]);
        // Script changes split runs: "GPT模型" is a word then a bigram.
        assert_eq!(terms(&mut q, "GPT模型"), ["gpt", "模型"]);
    }

    #[test]
    fn positions_line_up_between_index_and_query() {
        let positions = |a: &mut TextAnalyzer, text: &str| {
            let mut out = Vec::new();
            a.token_stream(text)
                .process(&mut |t| out.push((t.text.clone(), t.position)));
            out
        };
        let idx = positions(&mut index_analyzer(), "模型 gpt");
        let q = positions(&mut query_analyzer(), "模型 gpt");
        let pos = |v: &[(String, usize)], s: &str| v.iter().find(|(t, _)| t == s).map(|x| x.1);
        assert_eq!(
            pos(&idx, "gpt").unwrap() - pos(&idx, "模型").unwrap(),
            pos(&q, "gpt").unwrap() - pos(&q, "模型").unwrap()
        );
    }

    #[test]
    fn arabic_is_normalised() {
        let mut a = index_analyzer();
        // With and without harakat, hamza-alef and plain alef, teh marbuta and heh.
        assert_eq!(terms(&mut a, "مَكْتَبَة"), terms(&mut a, "مكتبه"));
        assert_eq!(terms(&mut a, "أحمد"), terms(&mut a, "احمد"));
        assert_eq!(terms(&mut a, "مرحبا بالعالم").len(), 2);
    }

    #[test]
    fn the_class_table_is_the_unicode_class() {
        for c in (0x80..=0x10_FFFFu32).filter_map(char::from_u32) {
            assert!(class(c) == unicode_class(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn caseless_characters_are_left_alone_by_lowercasing_and_folding() {
        let mut fold = MultilingualTokenizer::new(true).buffers.fold;
        let mut out = String::new();
        for c in (0..=0x2FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| caseless(*c))
        {
            fold_into(&mut fold, &c.to_string(), &mut out);
            assert_eq!(out, c.to_string(), "U+{:04X}", c as u32);
        }
    }

    /// The terms the tokenizer makes, spelled out the slow way: split into words and runs,
    /// then tantivy's lowercasing, folding and length filters on every term.
    fn reference(text: &str, unigrams: bool) -> Vec<(usize, usize, usize, String)> {
        use tantivy::tokenizer::RemoveLongFilter;
        let mut filters = TextAnalyzer::builder(RawTokenizer::default())
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
            .build();
        let mut out = Vec::new();
        let mut emit = |from, to, position, term: &str| {
            let mut stream = filters.token_stream(term);
            if stream.advance() {
                out.push((from, to, position, stream.token().text.clone()));
            }
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let end_of = |i: usize| chars.get(i).map_or(text.len(), |(o, _)| *o);
        let (mut i, mut position) = (0, 0);
        while i < chars.len() {
            let start = i;
            match class(chars[i].1) {
                Class::Separator | Class::Mark => i += 1,
                Class::Word => {
                    while i < chars.len() && matches!(class(chars[i].1), Class::Word | Class::Mark)
                    {
                        i += 1;
                    }
                    let word: String = chars[start..i]
                        .iter()
                        .filter_map(|(_, c)| normalize_char(*c))
                        .collect();
                    if !word.is_empty() {
                        emit(end_of(start), end_of(i), position, &word);
                        if unigrams && word.chars().any(is_umlaut) {
                            emit(
                                end_of(start),
                                end_of(i),
                                position,
                                &umlauts_spelled_out(&word),
                            );
                        }
                        position += 1;
                    }
                }
                Class::Bigram => {
                    while i < chars.len() && class(chars[i].1) == Class::Bigram {
                        i += 1;
                    }
                    let run = &chars[start..i];
                    let at = |k: usize| end_of(start + k);
                    for k in 0..run.len() {
                        if unigrams || run.len() == 1 {
                            emit(at(k), at(k + 1), position + k, &run[k].1.to_string());
                        }
                        if k + 1 < run.len() {
                            let pair: String = [run[k].1, run[k + 1].1].iter().collect();
                            emit(at(k), at(k + 2), position + k, &pair);
                        }
                    }
                    position += run.len();
                }
            }
        }
        out
    }

    #[test]
    fn terms_match_the_filters_they_stand_in_for() {
        let pieces = [
            "Hello",
            "WORLD",
            "x1",
            " ",
            ", ",
            ".",
            "\n",
            "Größe",
            "STRASSE",
            "Straße",
            "Übung",
            "café",
            "cafe\u{301}",
            "ÆON",
            "Ｆｕｌｌ",
            "ǅ",
            "İstanbul",
            "ΣΊΣΥΦΟΣ",
            "Привет",
            "مَكْتَبَة",
            "أحمد",
            "ـــ",
            "\u{200d}",
            "大海蛇",
            "模型",
            "蛇",
            "ｶﾀｶﾅ",
            "한국어",
            "ภาษาไทย",
            "GPT模型",
            "a\u{301}",
            "\u{301}b",
            &"y".repeat(70),
            &"z".repeat(64),
            &"z".repeat(65),
            &"ö".repeat(33),
            "ﬁ",
            "①",
            "²",
            "ß",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut texts: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
        for _ in 0..2000 {
            texts.push(
                (0..1 + next(8))
                    .map(|_| pieces[next(pieces.len())])
                    .collect(),
            );
        }
        for unigrams in [true, false] {
            let mut a = analyzer(unigrams);
            for text in &texts {
                let mut got = Vec::new();
                a.token_stream(text).process(&mut |t| {
                    got.push((t.offset_from, t.offset_to, t.position, t.text.clone()))
                });
                assert_eq!(
                    got,
                    reference(text, unigrams),
                    "{text:?} unigrams={unigrams}"
                );
            }
        }
    }

    #[test]
    fn long_tokens_are_dropped() {
        let mut a = index_analyzer();
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(terms(&mut a, &format!("a {long} b")), ["a", "b"]);
    }

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
