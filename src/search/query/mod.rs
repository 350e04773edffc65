//! Queries: the language users type (`parse`) and its translation to tantivy queries over the
//! index schema (`Builder`), with the terms the highlighter must mark.

mod forward;
mod parse;

use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;

pub use parse::{Expr, FIELD_NAMES, MAX_QUERY_BYTES, QueryError, QueryField, parse};

use super::schema::{Fields, TextField};
use super::text;

/// Terms a document must show highlighted: exact terms and prefixes, per text field.
#[derive(Debug, Default, Clone)]
pub struct HighlightTerms {
    pub exact: Vec<(TextField, String)>,
    pub prefixes: Vec<(TextField, String)>,
}

impl HighlightTerms {
    pub fn matches(&self, field: TextField, term: &str) -> bool {
        self.exact.iter().any(|(f, t)| *f == field && t == term)
            || self
                .prefixes
                .iter()
                .any(|(f, p)| *f == field && term.starts_with(p.as_str()))
    }

    pub fn has_field(&self, field: TextField) -> bool {
        self.exact.iter().any(|(f, _)| *f == field)
            || self.prefixes.iter().any(|(f, _)| *f == field)
    }
}

/// Builds tantivy queries from parsed expressions.
pub struct Builder<'a> {
    pub fields: &'a Fields,
    /// The project searched: ids are indexed within their project.
    pub project: &'a str,
    pub text: TextAnalyzer,
    pub keyword: TextAnalyzer,
}

impl Builder<'_> {
    /// The tantivy query for `expr` and the terms to highlight. `None` when no word of the
    /// query produces a term (punctuation only).
    pub fn build(&mut self, expr: &Expr) -> Option<(Box<dyn Query>, HighlightTerms)> {
        let mut hl = HighlightTerms::default();
        let q = self.expr(expr, false, &mut hl)?;
        Some((q, hl))
    }

    fn expr(&mut self, e: &Expr, negated: bool, hl: &mut HighlightTerms) -> Option<Box<dyn Query>> {
        match e {
            Expr::Leaf {
                field,
                text,
                prefix,
            } => self.leaf(*field, text, *prefix, negated, hl),
            Expr::Not(inner) => {
                let q = self.expr(inner, !negated, hl)?;
                Some(Box::new(BooleanQuery::new(vec![
                    (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                    (Occur::MustNot, q),
                ])))
            }
            Expr::And(parts) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for p in parts {
                    match p {
                        Expr::Not(inner) => {
                            if let Some(q) = self.expr(inner, !negated, hl) {
                                clauses.push((Occur::MustNot, q));
                            }
                        }
                        other => {
                            if let Some(q) = self.expr(other, negated, hl) {
                                clauses.push((Occur::Must, q));
                            }
                        }
                    }
                }
                if clauses.is_empty() {
                    return None;
                }
                if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Some(Box::new(BooleanQuery::new(clauses)))
            }
            Expr::Or(parts) => {
                let clauses: Vec<(Occur, Box<dyn Query>)> = parts
                    .iter()
                    .filter_map(|p| self.expr(p, negated, hl))
                    .map(|q| (Occur::Should, q))
                    .collect();
                (!clauses.is_empty())
                    .then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
            }
        }
    }

    fn leaf(
        &mut self,
        field: Option<QueryField>,
        text: &str,
        prefix: bool,
        negated: bool,
        hl: &mut HighlightTerms,
    ) -> Option<Box<dyn Query>> {
        match field {
            None => {
                let clauses: Vec<(Occur, Box<dyn Query>)> = TextField::ALL
                    .into_iter()
                    .filter_map(|f| self.text_leaf(f, text, prefix, negated, hl))
                    .map(|q| (Occur::Should, q))
                    .collect();
                (!clauses.is_empty())
                    .then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
            }
            Some(QueryField::Text(f)) => self.text_leaf(f, text, prefix, negated, hl),
            Some(QueryField::Keyword(f)) => {
                let term = text::tokens(&mut self.keyword, text.trim())
                    .into_iter()
                    .next()?
                    .2;
                Some(term_or_prefix(
                    Term::from_field_text(self.fields.keyword(f), &term),
                    prefix,
                ))
            }
            Some(QueryField::Id(f)) => {
                let id = text.trim();
                if id.is_empty() {
                    return None;
                }
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = self
                    .fields
                    .id_terms(self.project, f, id)
                    .into_iter()
                    .map(|t| (Occur::Should, term_or_prefix(t, prefix)))
                    .collect();
                if clauses.len() == 1 {
                    return clauses.pop().map(|(_, q)| q);
                }
                Some(Box::new(BooleanQuery::new(clauses)))
            }
        }
    }

    fn text_leaf(
        &mut self,
        f: TextField,
        text: &str,
        prefix: bool,
        negated: bool,
        hl: &mut HighlightTerms,
    ) -> Option<Box<dyn Query>> {
        let field = self.fields.text(f);
        let mut positions = Vec::new();
        self.text
            .token_stream(text)
            .process(&mut |t| positions.push((t.position, t.text.clone())));
        let (_, last) = positions.last().cloned()?;
        if !negated {
            let exact = if prefix {
                &positions[..positions.len() - 1]
            } else {
                &positions[..]
            };
            hl.exact.extend(exact.iter().map(|(_, t)| (f, t.clone())));
            if prefix {
                hl.prefixes.push((f, last.clone()));
            }
        }
        let base = positions[0].0;
        let terms: Vec<(usize, Term)> = positions
            .iter()
            .map(|(p, t)| (p - base, Term::from_field_text(field, t)))
            .collect();
        Some(match (terms.len(), prefix) {
            (1, false) => Box::new(TermQuery::new(
                Term::from_field_text(field, &last),
                IndexRecordOption::WithFreqs,
            )),
            (1, true) => prefix_query(field, &last),
            (_, false) => Box::new(forward::ForwardOnly(Box::new(
                PhraseQuery::new_with_offset(terms),
            ))),
            (_, true) => Box::new(forward::ForwardOnly(Box::new(
                PhrasePrefixQuery::new_with_offset(terms),
            ))),
        })
    }
}

fn term_or_prefix(term: Term, prefix: bool) -> Box<dyn Query> {
    if prefix {
        term_prefix_query(term)
    } else {
        Box::new(TermQuery::new(term, IndexRecordOption::Basic))
    }
}

/// Every term starting with `prefix`: the range [prefix, prefix + 0xFF). No UTF-8 text contains
/// the byte 0xFF, so the upper bound sorts after every extension of the prefix.
fn prefix_query(field: Field, prefix: &str) -> Box<dyn Query> {
    term_prefix_query(Term::from_field_text(field, prefix))
}

/// `prefix_query` of a term built already.
fn term_prefix_query(lower: Term) -> Box<dyn Query> {
    let mut upper = lower.clone();
    upper.append_bytes(&[0xFF]);
    Box::new(RangeQuery::new(
        Bound::Included(lower),
        Bound::Excluded(upper),
    ))
}
