//! Compression dictionaries trained from the store's own values (the `dicts` table; `codec`
//! tags 7 and 8).
//!
//! The built-in dictionary (`zstd-dict-1.txt`) knows our field names and common attribute
//! names. It cannot know a deployment's system prompts, tool schemas and vocabulary, which
//! repeat in most of its values. Once the writer has compressed `SAMPLE_BYTES` of values, it
//! trains a dictionary from them (zstd's trainer, on a thread of its own so that writes go on),
//! stores it in `dicts` and compresses every later value with it. On the load generator's data
//! a value takes about half the bytes it takes with the built-in dictionary, and compresses and
//! decompresses about twice as fast: the entropy tables come with the dictionary instead of
//! being built for every value. Data that changes gets a new dictionary after `RETRAIN_FACTOR`
//! times as much data again, so a store holds a handful at most; old values keep naming theirs.
//!
//! A dictionary's id is the first 8 bytes of its SHA-256: the registry of dictionaries is one
//! per process however many stores are open, and a value can only ever be decoded with the
//! bytes it was compressed with. Registered dictionaries live as long as the process (values
//! anywhere may name them), which the retraining schedule keeps to a few.
//!
//! Owns: the `dicts` table's contents and `meta.dict`, the registry, the writer thread's
//! sampling. Must not: choose value formats (`codec` does), or let any thread but a store's
//! writer compress with a trained dictionary: a value must never name a dictionary that its
//! file does not hold.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use redb::{ReadTransaction, ReadableTable, TableError};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::tables;

/// Bytes of values sampled before a dictionary is trained: enough for zstd's trainer to find
/// what repeats (it wants about a hundred times the dictionary's size), little enough to train
/// in about half a second.
pub const SAMPLE_BYTES: usize = 4 << 20;
/// The size of a trained dictionary.
const DICT_BYTES: usize = 64 << 10;
/// Longest part of one value that is sampled: a few huge payloads must not be the whole sample.
const SAMPLE_CAP: usize = 16 << 10;
/// A new dictionary follows after this many times the data compressed before the last one.
const RETRAIN_FACTOR: u64 = 16;
/// zstd level for trained dictionaries. Level 3's strategy finds a trained dictionary's
/// matches better than level 1's: 9 % smaller values on the load generator's observations
/// (the zstd CLI, 2,000 of them), compressing at ~400 MB/s instead of ~450 and decompressing
/// as fast (BENCHMARKS.md). The built-in dictionary stays at level 1 (`codec`), where level 3
/// gained under 3 %.
const LEVEL: i32 = 3;

/// A trained dictionary, prepared for decoding (and, on the writer thread, encoding).
pub struct Trained {
    pub id: u64,
    bytes: Vec<u8>,
    decoder: zstd::dict::DecoderDictionary<'static>,
    encoder: OnceLock<zstd::dict::EncoderDictionary<'static>>,
}

impl Trained {
    pub fn decoder(&self) -> &zstd::dict::DecoderDictionary<'static> {
        &self.decoder
    }

    /// Prepared on first use: reader processes never compress.
    pub fn encoder(&self) -> &zstd::dict::EncoderDictionary<'static> {
        self.encoder
            .get_or_init(|| zstd::dict::EncoderDictionary::copy(&self.bytes, LEVEL))
    }
}

fn registry() -> &'static RwLock<HashMap<u64, &'static Trained>> {
    static R: OnceLock<RwLock<HashMap<u64, &'static Trained>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

pub fn id_of(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(id)
}

/// The dictionary with this id, if this process has loaded it.
pub fn get(id: u64) -> Option<&'static Trained> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .copied()
}

/// Registers a dictionary (idempotent) and returns it.
pub fn register(bytes: &[u8]) -> &'static Trained {
    let id = id_of(bytes);
    let mut r = registry().write().unwrap_or_else(|e| e.into_inner());
    r.entry(id).or_insert_with(|| {
        Box::leak(Box::new(Trained {
            id,
            bytes: bytes.to_vec(),
            decoder: zstd::dict::DecoderDictionary::copy(bytes),
            encoder: OnceLock::new(),
        }))
    })
}

/// Registers every dictionary the file holds; returns the one new values use, and how many
/// there are. A file from before schema version 4 opened read-only has no `dicts` table.
pub fn load_all(tx: &ReadTransaction) -> Result<(Option<u64>, usize), StoreError> {
    let dicts = match tx.open_table(tables::DICTS) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok((None, 0)),
        Err(e) => return Err(e.into()),
    };
    let mut count = 0;
    for entry in dicts.iter()? {
        let (id, bytes) = entry?;
        let (id, bytes) = (id.value(), bytes.value());
        if id_of(bytes) != id {
            return Err(StoreError::Corrupt(format!(
                "compression dictionary {id:016x} does not match its id"
            )));
        }
        register(bytes);
        count += 1;
    }
    Ok((current(tx)?, count))
}

fn current(tx: &ReadTransaction) -> Result<Option<u64>, StoreError> {
    tx.open_table(tables::META)?
        .get(tables::META_DICT)?
        .map(|v| tables::read_u64(v.value()))
        .transpose()
}

/// For a reader beside a writing process: loads a dictionary the writer added since.
pub fn refresh(tx: &ReadTransaction) -> Result<(), StoreError> {
    match current(tx)? {
        Some(id) if get(id).is_none() => load_all(tx).map(|_| ()),
        // Known already, or a file from before schema version 4 (no `meta.dict`).
        _ => Ok(()),
    }
}

/// The writer thread's dictionary and sampling.
struct WriterState {
    current: Option<&'static Trained>,
    /// Bytes compressed since `current` was installed (or the writer started).
    compressed: u64,
    /// Sampling begins once `compressed` reaches this.
    sample_from: u64,
    samples: Vec<u8>,
    sizes: Vec<usize>,
    training: bool,
}

thread_local! {
    static WRITER: RefCell<Option<WriterState>> = const { RefCell::new(None) };
}

fn sample_from(count: usize) -> u64 {
    match u32::try_from(count) {
        Ok(0) => 0,
        Ok(n) => RETRAIN_FACTOR
            .saturating_pow(n)
            .saturating_mul(SAMPLE_BYTES as u64),
        Err(_) => u64::MAX,
    }
}

/// Makes this thread a store's writer: values it compresses from now on use `current` (one of
/// the `count` dictionaries the file holds) and are sampled for the next dictionary.
pub fn attach_writer(current: Option<u64>, count: usize) {
    WRITER.with(|w| {
        *w.borrow_mut() = Some(WriterState {
            current: current.and_then(get),
            compressed: 0,
            sample_from: sample_from(count),
            samples: Vec::new(),
            sizes: Vec::new(),
            training: false,
        })
    });
}

/// The dictionary values compressed on this thread use: a trained one only on a writer thread
/// whose store holds it.
pub fn for_compression() -> Option<&'static Trained> {
    WRITER.with(|w| w.borrow().as_ref().and_then(|s| s.current))
}

/// Counts (and, while sampling, keeps) a value this thread compressed.
pub fn observe(json: &[u8]) {
    WRITER.with(|w| {
        let mut w = w.borrow_mut();
        let Some(s) = w.as_mut() else { return };
        s.compressed = s.compressed.saturating_add(json.len() as u64);
        if s.compressed >= s.sample_from && !s.training && s.samples.len() < SAMPLE_BYTES {
            let part = &json[..json.len().min(SAMPLE_CAP)];
            s.samples.extend_from_slice(part);
            s.sizes.push(part.len());
        }
    });
}

/// Samples enough for training, handed over once (until `installed` or `failed`).
pub struct Samples {
    data: Vec<u8>,
    sizes: Vec<usize>,
}

pub fn take_samples() -> Option<Samples> {
    WRITER.with(|w| {
        let mut w = w.borrow_mut();
        let s = w.as_mut()?;
        if s.training || s.samples.len() < SAMPLE_BYTES {
            return None;
        }
        s.training = true;
        Some(Samples {
            data: std::mem::take(&mut s.samples),
            sizes: std::mem::take(&mut s.sizes),
        })
    })
}

/// Trains a dictionary (about half a second for `SAMPLE_BYTES`; run it off the writer thread).
pub fn train(samples: &Samples) -> Result<Vec<u8>, StoreError> {
    zstd::dict::from_continuous(&samples.data, &samples.sizes, DICT_BYTES)
        .map_err(|e| StoreError::Encode(format!("training a compression dictionary: {e}")))
}

/// The new dictionary is committed: this writer compresses with it from now on.
pub fn installed(t: &'static Trained, count: usize) {
    WRITER.with(|w| {
        if let Some(s) = w.borrow_mut().as_mut() {
            s.current = Some(t);
            s.compressed = 0;
            s.sample_from = sample_from(count);
            s.training = false;
        }
    });
}

/// Training or storing failed: sample afresh and try again later.
pub fn failed() {
    WRITER.with(|w| {
        if let Some(s) = w.borrow_mut().as_mut() {
            s.training = false;
            s.compressed = 0;
            s.sample_from = SAMPLE_BYTES as u64;
        }
    });
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::{Change, ObservationPatch, ObservationType, TimedChange};
    use redb::ReadableTableMetadata;

    use crate::store::{NoPrices, Store, WriteOp};
    use crate::time::Timestamp;

    const WORDS: &[&str] = &[
        "refund",
        "order",
        "invoice",
        "shipping",
        "account",
        "password",
        "reset",
        "policy",
        "customer",
        "support",
        "please",
        "answer",
        "question",
        "delivery",
        "warranty",
        "meeting",
        "schedule",
        "contract",
        "payment",
        "subscription",
        "upgrade",
        "release",
        "region",
        "sales",
    ];

    /// `n` words of support-desk text over a small vocabulary, the same for the same seed:
    /// values that share what a deployment's values share.
    pub(in crate::store) fn chat_text(seed: u64, n: usize) -> String {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let words: Vec<&str> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                WORDS[(x % WORDS.len() as u64) as usize]
            })
            .collect();
        words.join(" ")
    }

    /// Observations `from..from + n`, each with about 1.5 KB of chat text.
    fn batch(from: u64, n: u64) -> WriteOp {
        let changes = (from..from + n)
            .map(|i| {
                let mut p = ObservationPatch::new(format!("o{i}"), ObservationType::Generation);
                p.trace_id = Some(format!("t{}", i / 4));
                p.input = Some(serde_json::json!([
                    {"role": "system", "content": "You are the support agent of Acme Inc."},
                    {"role": "user", "content": chat_text(i, 200)},
                ]));
                TimedChange {
                    at: Timestamp::from_micros(1_700_000_000_000_000 + i as i64),
                    change: Change::Observation(p),
                }
            })
            .collect();
        WriteOp::Changes {
            project: "p".into(),
            changes,
        }
    }

    /// (dictionaries in the file, format tag of each stored observation by number).
    fn on_disk(store: &Store) -> (usize, Vec<(u64, u8)>) {
        let snap = store.snapshot().unwrap();
        let dicts = snap.tx.open_table(tables::DICTS).unwrap().len().unwrap() as usize;
        let obs = snap.tx.open_table(tables::OBSERVATIONS).unwrap();
        let values = snap.tx.open_table(tables::RECORD_VALUES).unwrap();
        let tags = obs
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                let n: u64 = k.value().1[1..].parse().unwrap();
                (
                    n,
                    crate::store::values::resolve(&values, v.value()).unwrap()[0],
                )
            })
            .collect();
        (dicts, tags)
    }

    #[test]
    fn the_writer_trains_a_dictionary_from_its_values_and_they_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
        let mut written = 0;
        // Training starts after SAMPLE_BYTES and comes back through the writer's queue.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while on_disk(&store).0 == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no dictionary trained"
            );
            if written < 8_000 {
                store.writer().submit_blocking(batch(written, 200)).unwrap();
                written += 200;
            } else {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        let sampled = SAMPLE_BYTES as u64 / 1_600;
        assert!(written >= sampled, "trained after {written} observations");
        store.writer().submit_blocking(batch(written, 200)).unwrap();
        let after = written;
        written += 200;

        let (dicts, tags) = on_disk(&store);
        assert_eq!(dicts, 1);
        assert_eq!(tags.len() as u64, written);
        // Before training: the built-in dictionary (tag 5); after: the trained one (tag 8).
        for (n, tag) in &tags {
            if *n < sampled {
                assert_eq!(*tag, 5, "observation {n}");
            }
            if *n >= after {
                assert_eq!(*tag, 8, "observation {n}");
            }
        }
        let size = |range: std::ops::Range<u64>| -> usize {
            let snap = store.snapshot().unwrap();
            let t = snap.tx.open_table(tables::OBSERVATIONS).unwrap();
            let values = snap.tx.open_table(tables::RECORD_VALUES).unwrap();
            range
                .map(|n| {
                    let row = t.get(("p", format!("o{n}").as_str())).unwrap().unwrap();
                    crate::store::values::resolve(&values, row.value())
                        .unwrap()
                        .len()
                })
                .sum()
        };
        let (before_bytes, after_bytes) = (size(0..200), size(after..after + 200));
        assert!(
            // A vocabulary of two dozen words: the built-in dictionary does well on it too.
            after_bytes * 10 < before_bytes * 9,
            "200 observations took {before_bytes} bytes before, {after_bytes} after"
        );
        let io = |store: &Store, n: u64| store.observation_io("p", &format!("o{n}")).unwrap().input;
        let expected: Vec<_> = [0, after, written - 1]
            .iter()
            .map(|&n| io(&store, n))
            .collect();
        store.shutdown();
        drop(store);

        // Reopened (and read-only beside it), the file names its dictionary and every value reads.
        let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
        let reader = Store::open_read_only(dir.path()).unwrap();
        for s in [&store, &reader] {
            let got: Vec<_> = [0, after, written - 1].iter().map(|&n| io(s, n)).collect();
            assert_eq!(got, expected);
            assert!(got.iter().all(Option::is_some));
            let snap = s.snapshot().unwrap();
            assert_eq!(
                snap.tx
                    .open_table(tables::OBSERVATIONS)
                    .unwrap()
                    .len()
                    .unwrap(),
                written
            );
        }
        // The reopened writer goes on with the stored dictionary.
        store.writer().submit_blocking(batch(written, 10)).unwrap();
        let (dicts, tags) = on_disk(&store);
        assert_eq!(dicts, 1);
        assert!(
            tags.iter()
                .filter(|(n, _)| *n >= written)
                .all(|(_, t)| *t == 8)
        );
        store.shutdown();
    }
}
