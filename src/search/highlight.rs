//! Highlighted snippets: the window of a field's text with the most query matches, HTML-escaped
//! (prompts are untrusted), matches wrapped in `<mark>`.
//!
//! The text is rebuilt from the record (`DocText`) and tokenized with the index analyzer, so a
//! highlight lands exactly on what the index matched. Phrase and boolean structure is not
//! replayed: every occurrence of a query term in the field is marked.

use tantivy::tokenizer::TextAnalyzer;

use super::query::HighlightTerms;
use super::schema::{DocText, TextField};
use super::text::tokens;

/// Bytes of text a snippet shows, around its matches.
pub const SNIPPET_BYTES: usize = 240;
/// Bytes of context kept before the first match of the window.
const CONTEXT_BEFORE: usize = 60;

/// A highlighted snippet of one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Highlight {
    pub field: TextField,
    /// HTML: escaped text with `<mark>` around matches, `…` where text was cut.
    pub html: String,
}

/// Highlights of every text field of `doc` that contains a query term, in field order.
pub fn highlights(
    analyzer: &mut TextAnalyzer,
    doc: &DocText,
    terms: &HighlightTerms,
) -> Vec<Highlight> {
    TextField::ALL
        .into_iter()
        .filter(|f| terms.has_field(*f))
        .filter_map(|f| {
            snippet(analyzer, doc.get(f), |t| terms.matches(f, t))
                .map(|html| Highlight { field: f, html })
        })
        .collect()
}

/// The best window of `text` with matched tokens marked; `None` when nothing matches.
pub fn snippet(
    analyzer: &mut TextAnalyzer,
    text: &str,
    matches: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut ranges: Vec<(usize, usize)> = tokens(analyzer, text)
        .into_iter()
        .filter(|(_, _, term)| matches(term))
        .map(|(from, to, _)| (from, to))
        .collect();
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable();
    // CJK bigrams overlap; touching or overlapping marks become one.
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    // The window (anchored at a match) that holds the most matches.
    let (mut best, mut best_count) = (0, 0);
    for (i, (from, _)) in merged.iter().enumerate() {
        let limit = from + SNIPPET_BYTES - CONTEXT_BEFORE;
        let count = merged[i..]
            .iter()
            .take_while(|(_, to)| *to <= limit)
            .count();
        if count > best_count {
            (best, best_count) = (i, count);
        }
    }
    let anchor = merged[best];
    let mut start = floor(text, anchor.0.saturating_sub(CONTEXT_BEFORE));
    // Start on a word boundary when one is near.
    if start > 0
        && let Some(space) = text[start..anchor.0].find(char::is_whitespace)
    {
        start += space + 1;
        start = ceil(text, start);
    }
    let end = ceil(text, (start + SNIPPET_BYTES).max(anchor.1).min(text.len()));
    let mut html = String::with_capacity(end - start + 32);
    if start > 0 {
        html.push('…');
    }
    let mut at = start;
    for &(from, to) in merged.iter().filter(|(f, _)| *f >= start && *f < end) {
        let to = to.min(end);
        escape(&text[at..from], &mut html);
        html.push_str("<mark>");
        escape(&text[from..to], &mut html);
        html.push_str("</mark>");
        at = to;
    }
    escape(&text[at..end], &mut html);
    if end < text.len() {
        html.push('…');
    }
    Some(html)
}

fn floor(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Escapes text for HTML element content and attribute values; newlines become spaces.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::text::{index_analyzer, query_analyzer};

    fn mark(text: &str, query: &str) -> Option<String> {
        let q: Vec<String> = tokens(&mut query_analyzer(), query)
            .into_iter()
            .map(|t| t.2)
            .collect();
        snippet(&mut index_analyzer(), text, |t| q.iter().any(|x| x == t))
    }

    #[test]
    fn marks_matches_and_escapes_untrusted_text() {
        assert_eq!(
            mark("<script>alert('x')</script> the Sea & snake", "sea").unwrap(),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; the <mark>Sea</mark> &amp; snake"
        );
        assert_eq!(mark("nothing here", "sea"), None);
    }

    #[test]
    fn folded_and_cjk_matches_cover_the_original_text() {
        assert_eq!(
            mark("Die Straße ist lang", "strasse").unwrap(),
            "Die <mark>Straße</mark> ist lang"
        );
        // Overlapping bigrams merge into one mark.
        assert_eq!(
            mark("我们在海里看到了一条大海蛇。", "大海蛇").unwrap(),
            "我们在海里看到了一条<mark>大海蛇</mark>。"
        );
    }

    #[test]
    fn long_text_is_cut_around_the_densest_window() {
        let text = format!("{} needle {}", "hay ".repeat(200), "straw ".repeat(200));
        let s = mark(&text, "needle").unwrap();
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("<mark>needle</mark>"));
        assert!(s.len() < SNIPPET_BYTES + 40);
    }
}
