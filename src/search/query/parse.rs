//! The query language and its translation to tantivy queries.
//!
//! ```text
//! query  := or
//! or     := and ("OR" and)*
//! and    := unary+                      (words are ANDed; "AND" is accepted and ignored)
//! unary  := ("-" | "NOT ") unary | "+" unary | atom
//! atom   := "(" or ")" | [field ":"] (phrase | word)
//! phrase := '"' text '"' ['*']          (\" escapes a quote; a trailing * is a phrase prefix)
//! word   := text up to a space, quote or parenthesis ['*' = prefix]
//! ```
//!
//! Unqualified words search input, output, name, metadata and status message. Field names are
//! those of `FIELD_NAMES` (a few aliases accepted). A word whose text before `:` is not a field
//! (`12:30`, `http://x`) is searched as text, unless it looks like a misspelt field name, which
//! is an error. Words go through the same tokenizer as documents, so `gpt-4o` and a Chinese
//! sentence become phrases of their tokens.

use crate::search::schema::{IdField, KeywordField, TextField};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Deepest nesting of parentheses and negations accepted.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the search query is empty")]
    Empty,
    #[error("the search query is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    #[error("the search query has no searchable words")]
    NoTerms,
    #[error("unclosed quote in the search query; close the phrase with \"")]
    UnclosedQuote,
    #[error("unbalanced parentheses in the search query")]
    Unbalanced,
    #[error("the search query nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("\"{0}\" needs something to search for after it")]
    Dangling(String),
    #[error(
        "unknown search field \"{0}\"; searchable fields are {fields}. Put text containing ':' in quotes",
        fields = FIELD_NAMES.join(", ")
    )]
    UnknownField(String),
    #[error("a lone * is not a query; use word* to search for words starting with \"word\"")]
    LoneWildcard,
}

/// Field names accepted in queries.
pub const FIELD_NAMES: [&str; 16] = [
    "input",
    "output",
    "name",
    "metadata",
    "statusMessage",
    "id",
    "traceId",
    "type",
    "level",
    "model",
    "userId",
    "sessionId",
    "environment",
    "tags",
    "release",
    "version",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryField {
    Text(TextField),
    Keyword(KeywordField),
    Id(IdField),
}

fn field_named(name: &str) -> Option<QueryField> {
    use QueryField::*;
    Some(match name.to_ascii_lowercase().as_str() {
        "input" => Text(TextField::Input),
        "output" => Text(TextField::Output),
        "name" => Text(TextField::Name),
        "metadata" => Text(TextField::Metadata),
        "statusmessage" | "status" => Text(TextField::StatusMessage),
        "id" => Id(IdField::Id),
        "traceid" | "trace" => Id(IdField::Trace),
        "type" => Keyword(KeywordField::Type),
        "level" => Keyword(KeywordField::Level),
        "model" => Keyword(KeywordField::Model),
        "userid" | "user" => Keyword(KeywordField::User),
        "sessionid" | "session" => Keyword(KeywordField::Session),
        "environment" | "env" => Keyword(KeywordField::Environment),
        "tags" | "tag" => Keyword(KeywordField::Tags),
        "release" => Keyword(KeywordField::Release),
        "version" => Keyword(KeywordField::Version),
        _ => return None,
    })
}

/// The parsed form of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Leaf {
        field: Option<QueryField>,
        text: String,
        prefix: bool,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Lexeme {
    Open(Option<QueryField>),
    Close,
    Or,
    And,
    Not,
    Leaf {
        field: Option<QueryField>,
        text: String,
        prefix: bool,
    },
}

pub fn parse(q: &str) -> Result<Expr, QueryError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    let lexemes = lex(q)?;
    if lexemes.is_empty() {
        return Err(QueryError::Empty);
    }
    let mut p = Parser {
        lexemes,
        at: 0,
        depth: 0,
    };
    let expr = p.or(None)?;
    if p.at < p.lexemes.len() {
        return Err(QueryError::Unbalanced);
    }
    Ok(expr)
}

fn lex(q: &str) -> Result<Vec<Lexeme>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ends_word = |c: char| c.is_whitespace() || c == '(' || c == ')' || c == '"';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                out.push(Lexeme::Open(None));
                i += 1;
                continue;
            }
            ')' => {
                out.push(Lexeme::Close);
                i += 1;
                continue;
            }
            '-' | '+' if chars.get(i + 1).is_some_and(|n| !n.is_whitespace()) => {
                if c == '-' {
                    out.push(Lexeme::Not);
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        // A word, a phrase, or a field qualifier in front of one of them.
        let mut field = None;
        if c != '"' {
            let start = i;
            while i < chars.len() && !ends_word(chars[i]) && chars[i] != ':' {
                i += 1;
            }
            if chars.get(i) == Some(&':') {
                let head: String = chars[start..i].iter().collect();
                let rest_is_url = chars.get(i + 1) == Some(&'/');
                match field_named(&head) {
                    Some(f) if !rest_is_url => {
                        field = Some(f);
                        i += 1;
                        match chars.get(i) {
                            None => return Err(QueryError::Dangling(format!("{head}:"))),
                            Some(c) if c.is_whitespace() || *c == ')' => {
                                return Err(QueryError::Dangling(format!("{head}:")));
                            }
                            Some('(') => {
                                out.push(Lexeme::Open(field));
                                i += 1;
                                continue;
                            }
                            _ => {}
                        }
                    }
                    None if !rest_is_url
                        && head.len() > 1
                        && head.chars().all(|c| c.is_ascii_alphabetic() || c == '_') =>
                    {
                        return Err(QueryError::UnknownField(head));
                    }
                    _ => {
                        // Not a field: the colon is part of the text.
                        i = start;
                    }
                }
            } else {
                i = start;
            }
        }
        if chars.get(i) == Some(&'"') {
            i += 1;
            let mut text = String::new();
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if chars.get(i + 1) == Some(&'"') => {
                        text.push('"');
                        i += 2;
                    }
                    '"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    other => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(QueryError::UnclosedQuote);
            }
            let prefix = chars.get(i) == Some(&'*');
            if prefix {
                i += 1;
            }
            out.push(Lexeme::Leaf {
                field,
                text,
                prefix,
            });
            continue;
        }
        let start = i;
        while i < chars.len() && !ends_word(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if field.is_none() {
            match word.as_str() {
                "OR" | "||" => {
                    out.push(Lexeme::Or);
                    continue;
                }
                "AND" | "&&" => {
                    out.push(Lexeme::And);
                    continue;
                }
                "NOT" => {
                    out.push(Lexeme::Not);
                    continue;
                }
                _ => {}
            }
        }
        let (text, prefix) = match word.strip_suffix('*') {
            Some(stem) => (stem.to_string(), true),
            None => (word, false),
        };
        if prefix && text.trim_end_matches('*').is_empty() {
            return Err(QueryError::LoneWildcard);
        }
        out.push(Lexeme::Leaf {
            field,
            text,
            prefix,
        });
    }
    Ok(out)
}

struct Parser {
    lexemes: Vec<Lexeme>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexeme> {
        self.lexemes.get(self.at)
    }

    fn or(&mut self, field: Option<QueryField>) -> Result<Expr, QueryError> {
        let mut alternatives = vec![self.and(field)?];
        while self.peek() == Some(&Lexeme::Or) {
            self.at += 1;
            alternatives.push(self.and(field)?);
        }
        Ok(if alternatives.len() == 1 {
            alternatives.remove(0)
        } else {
            Expr::Or(alternatives)
        })
    }

    fn and(&mut self, field: Option<QueryField>) -> Result<Expr, QueryError> {
        let mut parts = Vec::new();
        loop {
            match self.peek() {
                None | Some(Lexeme::Close) | Some(Lexeme::Or) => break,
                Some(Lexeme::And) => {
                    self.at += 1;
                }
                Some(_) => parts.push(self.unary(field)?),
            }
        }
        match parts.len() {
            0 => Err(
                match self.at.checked_sub(1).and_then(|i| self.lexemes.get(i)) {
                    Some(Lexeme::Or) => QueryError::Dangling("OR".into()),
                    Some(Lexeme::And) => QueryError::Dangling("AND".into()),
                    Some(Lexeme::Open(_)) => QueryError::Dangling("(".into()),
                    _ => QueryError::Empty,
                },
            ),
            1 => Ok(parts.remove(0)),
            _ => Ok(Expr::And(parts)),
        }
    }

    fn unary(&mut self, field: Option<QueryField>) -> Result<Expr, QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(QueryError::TooDeep);
        }
        let result = match self.lexemes.get(self.at).cloned() {
            Some(Lexeme::Not) => {
                self.at += 1;
                match self.peek() {
                    None | Some(Lexeme::Close) | Some(Lexeme::Or) | Some(Lexeme::And) => {
                        Err(QueryError::Dangling("NOT".into()))
                    }
                    _ => self.unary(field).map(|e| Expr::Not(Box::new(e))),
                }
            }
            Some(Lexeme::Open(inner)) => {
                self.at += 1;
                let e = self.or(inner.or(field))?;
                if self.peek() != Some(&Lexeme::Close) {
                    return Err(QueryError::Unbalanced);
                }
                self.at += 1;
                Ok(e)
            }
            Some(Lexeme::Leaf {
                field: own,
                text,
                prefix,
            }) => {
                self.at += 1;
                Ok(Expr::Leaf {
                    field: own.or(field),
                    text,
                    prefix,
                })
            }
            Some(Lexeme::Close) => Err(QueryError::Unbalanced),
            _ => Err(QueryError::Empty),
        };
        self.depth -= 1;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(field: Option<QueryField>, text: &str, prefix: bool) -> Expr {
        Expr::Leaf {
            field,
            text: text.into(),
            prefix,
        }
    }

    #[test]
    fn parses_words_phrases_prefixes_fields_and_operators() {
        use QueryField::*;
        let check = |q: &str, want: Expr| assert_eq!(parse(q).unwrap(), want, "{q}");
        check("sea", leaf(None, "sea", false));
        check(
            "sea snake",
            Expr::And(vec![leaf(None, "sea", false), leaf(None, "snake", false)]),
        );
        check("\"sea snake\"", leaf(None, "sea snake", false));
        check("sna*", leaf(None, "sna", true));
        check("\"big bad wo\"*", leaf(None, "big bad wo", true));
        check(
            "input:sea",
            leaf(Some(Text(TextField::Input)), "sea", false),
        );
        check(
            "model:\"gpt-4o\"",
            leaf(Some(Keyword(KeywordField::Model)), "gpt-4o", false),
        );
        check(
            "a OR b -c",
            Expr::Or(vec![
                leaf(None, "a", false),
                Expr::And(vec![
                    leaf(None, "b", false),
                    Expr::Not(Box::new(leaf(None, "c", false))),
                ]),
            ]),
        );
        check(
            "output:(a OR b)",
            Expr::Or(vec![
                leaf(Some(Text(TextField::Output)), "a", false),
                leaf(Some(Text(TextField::Output)), "b", false),
            ]),
        );
        // Colons that are not field qualifiers stay text.
        check("12:30", leaf(None, "12:30", false));
        check(
            "http://example.com",
            leaf(None, "http://example.com", false),
        );
        check("x:y", leaf(None, "x:y", false));
    }

    #[test]
    fn malformed_queries_are_errors() {
        let err = |q: &str| parse(q).unwrap_err();
        assert_eq!(err(""), QueryError::Empty);
        assert_eq!(err("   "), QueryError::Empty);
        assert_eq!(err("\"open"), QueryError::UnclosedQuote);
        assert_eq!(err("(a b"), QueryError::Unbalanced);
        assert_eq!(err("a b)"), QueryError::Unbalanced);
        assert_eq!(err("input:"), QueryError::Dangling("input:".into()));
        assert_eq!(err("a OR"), QueryError::Dangling("OR".into()));
        assert_eq!(err("*"), QueryError::LoneWildcard);
        assert!(matches!(err("inptu:x"), QueryError::UnknownField(f) if f == "inptu"));
        assert_eq!(err(&"a ".repeat(2000)), QueryError::TooLong);
        assert_eq!(err(&"(".repeat(100)), QueryError::TooDeep);
        assert!(err("inptu:x").to_string().contains("input, output"));
    }
}
