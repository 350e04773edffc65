//! Which segments the index merges. tantivy reads a merge's segments through memory maps, and
//! every page a merge reads stays resident in the server until those segments are closed, so an
//! unbounded merge makes peak memory grow with the index (the last merges of a 1M-observation
//! load mapped over 120 MiB at once). This policy keeps tantivy's log-sized levels but caps what
//! one merge reads, so the mapped part of resident memory has a ceiling whatever the index size,
//! and merges many small segments at once, so that under load a document is merged once on its
//! way to a full segment instead of two or three times.
//!
//! It owns merge selection only: what is indexed and when it is committed is `indexer`'s.

use tantivy::index::{SegmentId, SegmentMeta};
use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy};

/// Most documents (live and deleted) that one merge reads. At ~420–520 bytes of index per
/// document (BENCHMARKS.md) that is 40–50 MiB mapped per merge. Segments stop growing near this
/// size, so a search over N documents visits about N / 100,000 full segments plus a few small
/// ones; at 1M observations that costs searches nothing measurable against their 20 ms target.
pub const MERGE_MAX_DOCS: u32 = 100_000;

/// Segments of one level merged together (tantivy's default is 8). Under load the indexer's
/// commits (every `MIN_COMMIT_INTERVAL`) make segments of ~1,500–3,000 documents. Eight at a
/// time took each document through ~2.4 merges on its way to the cap (8 × 2,000, then five or
/// six of those, and some again); 32 at a time make segments of ~50,000–100,000 in one merge,
/// a level that reaches 32 segments only after ~1.6M more documents. Merging was an eighth of
/// the server's CPU under load, and this took over a third of it away (BENCHMARKS.md, "Merging
/// once"); searches visit up to 31 small segments more, which at 1M made them ~1 ms slower.
pub const MERGE_FACTOR: usize = 32;

/// At most this many merges run at once (tantivy's default is 4): each one maps its segments,
/// and on two cores more merges at once only share the same CPU.
pub const MERGE_THREADS: usize = 1;

/// tantivy's `LogMergePolicy`, merging `factor` segments of a level at once, with every merge's
/// input cut to `max_docs` documents.
#[derive(Debug)]
pub struct BoundedMerges {
    log: LogMergePolicy,
    max_docs: u32,
    deleted_share: f32,
}

impl BoundedMerges {
    /// `deleted_share`: a segment with at least this share of deleted documents is merged
    /// (which drops them) even when its level would not be merged yet.
    pub fn new(max_docs: u32, factor: usize, deleted_share: f32) -> BoundedMerges {
        let mut log = LogMergePolicy::default();
        log.set_min_num_segments(factor);
        log.set_del_docs_ratio_before_merge(deleted_share);
        BoundedMerges {
            log,
            max_docs,
            deleted_share,
        }
    }

    fn has_many_deletes(&self, s: &SegmentMeta) -> bool {
        s.max_doc() > 0 && s.num_deleted_docs() as f32 / s.max_doc() as f32 >= self.deleted_share
    }
}

impl MergePolicy for BoundedMerges {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        // Full segments take no part in levels: with them, a level of small segments could wait
        // for company it can never merge with.
        let open: Vec<SegmentMeta> = segments
            .iter()
            .filter(|s| s.max_doc() < self.max_docs)
            .cloned()
            .collect();
        let mut merges = Vec::new();
        for level in self.log.compute_merge_candidates(&open) {
            let mut members: Vec<&SegmentMeta> =
                open.iter().filter(|s| level.0.contains(&s.id())).collect();
            // Smallest first: the cut keeps as many segments as fit, which is what lowers the
            // segment count.
            members.sort_by_key(|s| s.max_doc());
            let mut docs = 0u32;
            let cut: Vec<SegmentId> = members
                .iter()
                .take_while(|s| {
                    docs = docs.saturating_add(s.max_doc());
                    docs <= self.max_docs
                })
                .map(|s| s.id())
                .collect();
            let alone = members.iter().filter(|s| self.has_many_deletes(s));
            if cut.len() >= 2 {
                merges.push(MergeCandidate(cut));
            } else {
                // Nothing to merge together; a segment carrying many deleted documents is still
                // rewritten alone to drop them.
                merges.extend(alone.map(|s| MergeCandidate(vec![s.id()])));
            }
        }
        // A full segment rewritten alone reads its own size: about the cap for segments this
        // policy made. An index written before it may hold larger ones; each is read whole once,
        // when a fifth of it is deleted, which is what the unbounded policy did too.
        merges.extend(
            segments
                .iter()
                .filter(|s| s.max_doc() >= self.max_docs && self.has_many_deletes(s))
                .map(|s| MergeCandidate(vec![s.id()])),
        );
        merges
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tantivy::Index;
    use tantivy::index::{SegmentId, SegmentMeta};
    use tantivy::indexer::MergePolicy;

    use super::{BoundedMerges, MERGE_FACTOR};

    const CAP: u32 = 100_000;

    fn segments(sizes: &[(u32, u32)]) -> (Index, Vec<SegmentMeta>) {
        let index = Index::create_in_ram(tantivy::schema::Schema::builder().build());
        let metas = sizes
            .iter()
            .map(|&(docs, deleted)| {
                index
                    .new_segment_meta(SegmentId::generate_random(), docs)
                    .with_delete_meta(deleted, 0)
            })
            .collect();
        (index, metas)
    }

    /// The merges, each as the sizes of its segments, smallest first.
    fn merges(sizes: &[(u32, u32)]) -> Vec<Vec<u32>> {
        let (_index, metas) = segments(sizes);
        let mut out: Vec<Vec<u32>> = BoundedMerges::new(CAP, MERGE_FACTOR, 0.2)
            .compute_merge_candidates(&metas)
            .into_iter()
            .map(|c| {
                let mut docs: Vec<u32> =
                    c.0.iter()
                        .map(|id| metas.iter().find(|m| m.id() == *id).unwrap().max_doc())
                        .collect();
                docs.sort();
                docs
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_level_of_small_segments_merges_whole() {
        let level = vec![(1_000, 0); MERGE_FACTOR];
        assert_eq!(merges(&level), vec![vec![1_000; MERGE_FACTOR]]);
        assert!(
            merges(&level[1..]).is_empty(),
            "a level waits for {MERGE_FACTOR}"
        );
    }

    #[test]
    fn a_merge_reads_no_more_than_the_cap() {
        // Unbounded, these would make one segment of over a million documents.
        let mut sizes = vec![(45_000, 0); MERGE_FACTOR - 3];
        sizes.extend([(30_000, 0), (31_000, 0), (32_000, 0)]);
        assert_eq!(merges(&sizes), vec![vec![30_000, 31_000, 32_000]]);
    }

    #[test]
    fn full_segments_are_left_alone_unless_they_carry_deletes() {
        assert!(merges(&[(CAP, 0); 12]).is_empty());
        assert!(merges(&[(150_000, 1_000); 9]).is_empty());
        let mut sizes = vec![(CAP, 0); 9];
        sizes.push((CAP, 30_000));
        assert_eq!(
            merges(&sizes),
            vec![vec![CAP]],
            "rewritten alone to drop its deletes"
        );
    }

    #[test]
    fn small_segments_beside_full_ones_still_merge() {
        let mut sizes = vec![(CAP, 0); 20];
        sizes.extend(vec![(2_000, 0); MERGE_FACTOR]);
        assert_eq!(merges(&sizes), vec![vec![2_000; MERGE_FACTOR]]);
    }

    #[test]
    fn a_segment_with_many_deletes_that_cannot_merge_with_others_is_rewritten_alone() {
        // Two big segments of one level that would exceed the cap together.
        let merged = merges(&[(70_000, 20_000), (80_000, 0)]);
        assert_eq!(merged, vec![vec![70_000]]);
    }

    #[test]
    fn no_segment_is_in_two_merges_and_no_merge_passes_the_cap() {
        let mut seed = 7u64;
        let mut next = |n: u32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as u32) % n
        };
        for _ in 0..200 {
            let sizes: Vec<(u32, u32)> = (0..next(40) + 1)
                .map(|_| {
                    let docs = 1 + next(2 * CAP);
                    (docs, next(docs / 2 + 1))
                })
                .collect();
            let (_index, metas) = segments(&sizes);
            let candidates =
                BoundedMerges::new(CAP, MERGE_FACTOR, 0.2).compute_merge_candidates(&metas);
            let mut seen = HashSet::new();
            for c in candidates {
                assert!(c.0.iter().all(|id| seen.insert(*id)), "{sizes:?}");
                if c.0.len() > 1 {
                    let docs: u32 =
                        c.0.iter()
                            .map(|id| metas.iter().find(|m| m.id() == *id).unwrap().max_doc())
                            .sum();
                    assert!(docs <= CAP, "{sizes:?}");
                }
            }
        }
    }

    /// Feeds `commits` segments of `docs` documents through the policy, merging as it says the
    /// moment it says so: (documents merged per document added, segments at the end).
    fn under_load(factor: usize, commits: usize, docs: u32) -> (f64, usize) {
        let index = Index::create_in_ram(tantivy::schema::Schema::builder().build());
        let policy = BoundedMerges::new(CAP, factor, 0.2);
        let meta = |n| index.new_segment_meta(SegmentId::generate_random(), n);
        let mut segments: Vec<SegmentMeta> = Vec::new();
        let mut merged = 0u64;
        for _ in 0..commits {
            segments.push(meta(docs));
            for c in policy.compute_merge_candidates(&segments) {
                let (taken, kept): (Vec<SegmentMeta>, Vec<SegmentMeta>) =
                    segments.into_iter().partition(|s| c.0.contains(&s.id()));
                let sum: u32 = taken.iter().map(|s| s.max_doc()).sum();
                assert!(sum <= CAP);
                merged += u64::from(sum);
                segments = kept;
                segments.push(meta(sum));
            }
        }
        let added = commits as f64 * f64::from(docs);
        (merged as f64 / added, segments.len())
    }

    #[test]
    fn under_load_a_document_is_merged_about_once() {
        // 1.25M documents (a 1M-observation load) in commits of 2,000.
        let (per_doc, segments) = under_load(MERGE_FACTOR, 625, 2_000);
        assert!(per_doc < 1.1, "merged {per_doc:.2} times per document");
        assert!(segments < 2 * MERGE_FACTOR, "{segments} segments left");
        // tantivy's default factor merges each document more than twice (2.39 here).
        let (per_doc, _) = under_load(8, 625, 2_000);
        assert!(per_doc > 1.8, "factor 8: {per_doc:.2}");
    }
}
