//! The newest (or oldest) hits of a query, visiting segments in order of their time range and
//! skipping every segment that cannot hold one of them.
//!
//! Documents arrive roughly in time order, so segments cover roughly disjoint time ranges and
//! the newest hits sit in the few most recent segments. Ordering every match by its fast-field
//! time (what `TopDocs::order_by_fast_field` does over the whole index) read the time of each of
//! 380,000 matches of a common word; this reads only the segments whose time range can still
//! beat the hits already found. The answer is the same set and order as over the whole index:
//! a segment is skipped only when its whole range is strictly worse than the last wanted hit,
//! and hits are merged as tantivy merges them (time, then ascending document address).
//!
//! Must not: count (the caller counts with `Count`, which needs no times) or score.

use std::cmp::Reverse;

use tantivy::collector::{Collector, TopDocs};
use tantivy::query::{EnableScoring, Query};
use tantivy::{DocAddress, Order, Searcher};

use super::SearchError;

/// The fast field hits are ordered by.
const TIME: &str = "time";

/// Hits `offset..offset + limit` of `query` ordered by time (`Desc`: newest first).
pub(super) fn top(
    searcher: &Searcher,
    query: &dyn Query,
    order: Order,
    offset: usize,
    limit: usize,
) -> Result<Vec<DocAddress>, SearchError> {
    let wanted = offset.saturating_add(limit);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let per_segment = TopDocs::with_limit(wanted).order_by_fast_field::<i64>(TIME, order);
    // Each segment's time range (None: unknown, always visited), best segments first.
    let mut segments: Vec<(usize, Option<(i64, i64)>)> = searcher
        .segment_readers()
        .iter()
        .enumerate()
        .map(|(ord, r)| {
            let range = r
                .fast_fields()
                .i64(TIME)
                .ok()
                .filter(|_| r.max_doc() > 0)
                .map(|c| (c.min_value(), c.max_value()));
            (ord, range)
        })
        .collect();
    match order {
        Order::Desc => segments.sort_by_key(|(_, r)| Reverse(r.map_or(i64::MAX, |r| r.1))),
        Order::Asc => segments.sort_by_key(|(_, r)| r.map_or(i64::MIN, |r| r.0)),
    }
    let mut hits: Vec<(Option<i64>, DocAddress)> = Vec::new();
    for (ord, range) in segments {
        if hits.len() >= wanted
            && let (Some((min, max)), Some(Some(last))) = (range, hits.last().map(|h| h.0))
        {
            let hopeless = match order {
                Order::Desc => max < last,
                Order::Asc => min > last,
            };
            if hopeless {
                continue;
            }
        }
        let reader = &searcher.segment_readers()[ord];
        let fruit = per_segment.collect_segment(weight.as_ref(), ord as u32, reader)?;
        hits.extend(per_segment.merge_fruits(vec![fruit])?);
        sort(&mut hits, order);
        hits.truncate(wanted);
    }
    Ok(hits.into_iter().skip(offset).map(|(_, a)| a).collect())
}

/// Tantivy's order: by time (a document without one last), ties by ascending address.
fn sort(hits: &mut [(Option<i64>, DocAddress)], order: Order) {
    hits.sort_by(|(ta, a), (tb, b)| {
        let by_time = match (ta, tb, order) {
            (Some(x), Some(y), Order::Desc) => y.cmp(x),
            (Some(x), Some(y), Order::Asc) => x.cmp(y),
            (x, y, _) => y.is_some().cmp(&x.is_some()),
        };
        by_time.then(a.cmp(b))
    });
}

#[cfg(test)]
mod tests {
    use tantivy::collector::TopDocs;
    use tantivy::indexer::NoMergePolicy;
    use tantivy::query::{AllQuery, Query, TermQuery};
    use tantivy::schema::{FAST, INDEXED, IndexRecordOption, STRING, Schema};
    use tantivy::{Index, Order, TantivyDocument, Term};

    /// Builds one segment per `(first time, step, documents)`, deletes some documents, and
    /// holds every page to tantivy's own ordering over the whole index.
    fn check(segments: &[(i64, i64, i64)]) {
        let mut b = Schema::builder();
        let word = b.add_text_field("word", STRING);
        let id = b.add_i64_field("id", INDEXED);
        let time = b.add_i64_field(super::TIME, INDEXED | FAST);
        let index = Index::create_in_ram(b.build());
        let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        w.set_merge_policy(Box::new(NoMergePolicy));
        let mut n = 0i64;
        for &(start, step, docs) in segments {
            for i in 0..docs {
                let mut d = TantivyDocument::default();
                d.add_text(word, if n % 3 == 0 { "a" } else { "b" });
                d.add_i64(id, n);
                d.add_i64(time, start + i * step);
                w.add_document(d).unwrap();
                n += 1;
            }
            w.commit().unwrap();
        }
        for gone in [5, 77, 110, 150, 160] {
            w.delete_term(Term::from_field_i64(id, gone));
        }
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.segment_readers().len(), segments.len());
        let queries: Vec<Box<dyn Query>> = vec![
            Box::new(AllQuery),
            Box::new(TermQuery::new(
                Term::from_field_text(word, "a"),
                IndexRecordOption::Basic,
            )),
        ];
        let pages = [
            (0, 1),
            (0, 7),
            (0, 11),
            (3, 10),
            (10, 12),
            (20, 15),
            (0, 500),
            (150, 9),
        ];
        for q in &queries {
            for order in [Order::Desc, Order::Asc] {
                for (offset, limit) in pages {
                    let want: Vec<_> = searcher
                        .search(
                            q.as_ref(),
                            &TopDocs::with_limit(limit)
                                .and_offset(offset)
                                .order_by_fast_field::<i64>(super::TIME, order),
                        )
                        .unwrap()
                        .into_iter()
                        .map(|(_, a)| a)
                        .collect();
                    let got = super::top(&searcher, q.as_ref(), order, offset, limit).unwrap();
                    assert_eq!(got, want, "{q:?} {order:?} {offset}+{limit}");
                }
            }
        }
    }

    /// Rising ranges, an old straggler segment, a wide one, equal times across segments.
    #[test]
    fn pages_equal_ordering_every_match_by_time() {
        check(&[
            (0, 10, 40),
            (400, 10, 40),
            (795, 5, 30),
            (100, 1, 20),
            (-50, 60, 25),
            (790, 0, 12),
        ]);
    }

    /// Segments whose range ends exactly at the last wanted hit's time: their equal times must
    /// still compete (ties go to the lower document address).
    #[test]
    fn segments_tied_with_the_last_hit_are_not_skipped() {
        // Newest first, 500..=600 fills an 11-hit page down to 500; the other segment holds
        // only 500s and wins that tie: it is larger, so it comes first in segment order.
        check(&[(500, 0, 30), (500, 10, 11)]);
        // Oldest first, the same at 600.
        check(&[(600, 0, 30), (500, 10, 11)]);
    }
}
