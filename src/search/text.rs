//! Text analysis: the one tokenizer every language goes through (the text it is given comes
//! from `extract`).
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

use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Longest token kept, in bytes after folding.
pub const MAX_TOKEN_BYTES: usize = 64;
/// Longest keyword (model, tag, user id...) indexed, in bytes.
pub const MAX_KEYWORD_BYTES: usize = 256;

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

/// A keyword value as indexed: at most `MAX_KEYWORD_BYTES`, else left out.
pub fn keyword(value: &str) -> Option<&str> {
    (!value.is_empty() && value.len() <= MAX_KEYWORD_BYTES).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
