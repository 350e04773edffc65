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
    AsciiFoldingFilter, LowerCaser, RawTokenizer, RemoveLongFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
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
    TextAnalyzer::builder(MultilingualTokenizer { unigrams })
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
        .build()
}

/// Tokens of `text` through `analyzer`: (byte range in `text`, term).
pub fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |t: &Token| out.push((t.offset_from, t.offset_to, t.text.clone())));
    out
}

#[derive(Clone)]
struct MultilingualTokenizer {
    unigrams: bool,
}

struct VecTokenStream {
    tokens: Vec<Token>,
    next: usize,
    current: Token,
}

impl TokenStream for VecTokenStream {
    fn advance(&mut self) -> bool {
        match self.tokens.get_mut(self.next) {
            Some(t) => {
                self.current = std::mem::take(t);
                self.next += 1;
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &Token {
        &self.current
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.current
    }
}

impl Tokenizer for MultilingualTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        VecTokenStream {
            tokens: split(text, self.unigrams),
            next: 0,
            current: Token::default(),
        }
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

fn split(text: &str, unigrams: bool) -> Vec<Token> {
    let mut out = Vec::new();
    let mut position = 0usize;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |(o, _)| *o);
    let mut i = 0;
    while i < chars.len() {
        match class(chars[i].1) {
            Class::Separator | Class::Mark => i += 1,
            Class::Word => {
                let start = i;
                while i < chars.len() && matches!(class(chars[i].1), Class::Word | Class::Mark) {
                    i += 1;
                }
                let word: String = chars[start..i]
                    .iter()
                    .filter_map(|(_, c)| normalize_char(*c))
                    .collect();
                if !word.is_empty() {
                    // German writes ä/ö/ü as ae/oe/ue where umlauts are missing (keyboards,
                    // URLs): the indexed word also carries that spelling, so "Groesse" finds
                    // "Größe" as "Grosse" does (ascii folding gives the latter).
                    let transliterated = unigrams.then(|| umlauts_spelled_out(&word)).flatten();
                    let (from, to) = (end_of(start), end_of(i));
                    out.push(token(from, to, position, word));
                    if let Some(t) = transliterated {
                        out.push(token(from, to, position, t));
                    }
                    position += 1;
                }
            }
            Class::Bigram => {
                let start = i;
                while i < chars.len() && class(chars[i].1) == Class::Bigram {
                    i += 1;
                }
                let run = &chars[start..i];
                let at = |k: usize| end_of(start + k);
                if run.len() == 1 {
                    out.push(token(at(0), at(1), position, run[0].1.to_string()));
                } else {
                    for k in 0..run.len() {
                        if unigrams {
                            out.push(token(at(k), at(k + 1), position + k, run[k].1.to_string()));
                        }
                        if k + 1 < run.len() {
                            let pair: String = [run[k].1, run[k + 1].1].iter().collect();
                            out.push(token(at(k), at(k + 2), position + k, pair));
                        }
                    }
                }
                position += run.len();
            }
        }
    }
    out
}

/// `word` with German umlauts written as two letters, if it has any.
fn umlauts_spelled_out(word: &str) -> Option<String> {
    if !word.chars().any(|c| "äöüÄÖÜ".contains(c)) {
        return None;
    }
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
    Some(out)
}

fn token(from: usize, to: usize, position: usize, text: String) -> Token {
    Token {
        offset_from: from,
        offset_to: to,
        position,
        text,
        position_length: 1,
    }
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
        Value::String(s) => {
            if is_blob(s) {
                return;
            }
            let trimmed = s.trim_start();
            if (trimmed.starts_with('{') || trimmed.starts_with('['))
                && s.len() <= cap
                && let Ok(inner) = serde_json::from_str::<Value>(s)
            {
                walk(&inner, cap, out, depth + 1);
                return;
            }
            push(out, s, cap);
        }
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

    #[test]
    fn json_text_is_capped_on_a_char_boundary() {
        let v = json!(["ä".repeat(100)]);
        let text = json_text(&v, 51);
        assert!(text.len() <= 51);
        assert!(text.chars().all(|c| c == 'ä'));
    }
}
