//! Where trace and observation values live: in `record_values`, under a sequence number that
//! only grows, while the rows of `traces` and `observations` (keyed by project and id) hold a
//! short reference to them (`codec` tag 9).
//!
//! Why: ids are random, so a table keyed by id takes its inserts all over its key range, and
//! redb splits a full leaf in half; such pages stay about two thirds full. At 1M observations
//! that was 262 bytes of empty page per 500-byte observation value. A key greater than every
//! key in the table is redb's fast path instead: the full last leaf is left as it is and a new
//! one started, so values appended in the order they are written fill their pages. Only the
//! small references stay scattered. A value that changes is appended again and its old entry
//! removed, so the table only ever grows at its end.
//!
//! Rows written before schema version 5 hold their value in place; every read goes through
//! `resolve`, which takes either.
//!
//! Owns: the reference scheme and the value sequence. Must not: encode or decode values
//! (`codec`), or know what the rows mean.

use std::borrow::{Borrow, Cow};

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::StoreError;
use super::codec;
use super::tables::RECORD_VALUES;

/// The value of a row-table entry: the entry itself when stored in place, else the value it
/// refers to in `values` (`record_values`).
pub fn resolve<'v>(
    values: &impl ReadableTable<u64, &'static [u8]>,
    raw: &'v [u8],
) -> Result<Cow<'v, [u8]>, StoreError> {
    match codec::value_ref(raw)? {
        None => Ok(Cow::Borrowed(raw)),
        Some(seq) => lookup(values, seq).map(Cow::Owned),
    }
}

fn lookup(
    values: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Vec<u8>, StoreError> {
    match values.get(seq)? {
        Some(v) => Ok(v.value().to_vec()),
        None => Err(missing(seq)),
    }
}

fn missing(seq: u64) -> StoreError {
    StoreError::Corrupt(format!("record value {seq} is referenced but missing"))
}

/// `resolve` for the reads of one read transaction: `record_values` is opened at the first
/// reference (a file written before schema version 5 and opened read-only may not have it).
pub struct Resolver<'tx> {
    tx: &'tx ReadTransaction,
    values: Option<ReadOnlyTable<u64, &'static [u8]>>,
}

impl<'tx> Resolver<'tx> {
    pub fn new(tx: &'tx ReadTransaction) -> Resolver<'tx> {
        Resolver { tx, values: None }
    }

    pub fn resolve<'v>(&mut self, raw: &'v [u8]) -> Result<Cow<'v, [u8]>, StoreError> {
        let Some(seq) = codec::value_ref(raw)? else {
            return Ok(Cow::Borrowed(raw));
        };
        let values = match &self.values {
            Some(v) => v,
            None => self.values.insert(self.tx.open_table(RECORD_VALUES)?),
        };
        lookup(values, seq).map(Cow::Owned)
    }
}

/// `resolve` for a single read.
pub fn resolve_in<'v>(tx: &ReadTransaction, raw: &'v [u8]) -> Result<Cow<'v, [u8]>, StoreError> {
    Resolver::new(tx).resolve(raw)
}

/// `record_values` in a write transaction.
pub type Values<'t> = Table<'t, u64, &'static [u8]>;
type Rows<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;

/// `resolve` inside a write transaction: through `held` when the writer holds `record_values`
/// open (redb refuses to open a table twice), else opened for this read.
pub fn resolve_write<'v>(
    tx: &WriteTransaction,
    held: Option<&Values>,
    raw: &'v [u8],
) -> Result<Cow<'v, [u8]>, StoreError> {
    let Some(seq) = codec::value_ref(raw)? else {
        return Ok(Cow::Borrowed(raw));
    };
    match held {
        Some(values) => lookup(values, seq),
        None => lookup(&tx.open_table(RECORD_VALUES)?, seq),
    }
    .map(Cow::Owned)
}

/// The writer's side, for one write transaction: the next sequence number, taken from the
/// table's last key when first needed.
#[derive(Default)]
pub struct Appender {
    next: Option<u64>,
}

impl Appender {
    fn take_seq(&mut self, values: &Values) -> Result<u64, StoreError> {
        let seq = match self.next {
            Some(n) => n,
            None => values.last()?.map_or(0, |(k, _)| k.value() + 1),
        };
        self.next = Some(seq + 1);
        Ok(seq)
    }

    /// Stores `value` as the value of `key`: appended to `values`, a reference to it in `rows`.
    /// The value it replaces, if one was in `values`, is removed.
    pub fn put<'k>(
        &mut self,
        rows: &mut Rows,
        values: &mut Values,
        key: impl Borrow<(&'k str, &'k str)>,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let seq = self.take_seq(values)?;
        values.insert(seq, value)?;
        let old = rows.insert(key.borrow(), codec::ValueRef::new(seq).as_bytes())?;
        if let Some(old) = old
            && let Some(old_seq) = codec::value_ref(old.value())?
        {
            values.remove(old_seq)?;
        }
        Ok(())
    }
}

/// Removes `key`'s row and the value it refers to; returns the value.
pub fn take<'k>(
    rows: &mut Rows,
    values: &mut Values,
    key: impl Borrow<(&'k str, &'k str)>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(raw) = rows.remove(key.borrow())?.map(|v| v.value().to_vec()) else {
        return Ok(None);
    };
    match codec::value_ref(&raw)? {
        None => Ok(Some(raw)),
        Some(seq) => match values.remove(seq)? {
            Some(v) => Ok(Some(v.value().to_vec())),
            None => Err(missing(seq)),
        },
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

    use super::*;

    const ROWS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rows");
    const BY_ID: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("by_id");

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("v.redb")).unwrap();
        (dir, db)
    }

    /// (rows, values) entries of the committed state.
    fn counts(db: &Database) -> (u64, u64) {
        let tx = db.begin_read().unwrap();
        let rows = tx.open_table(ROWS).unwrap().len().unwrap();
        (rows, tx.open_table(RECORD_VALUES).unwrap().len().unwrap())
    }

    fn read(db: &Database, id: &str) -> Option<Vec<u8>> {
        let tx = db.begin_read().unwrap();
        let rows = tx.open_table(ROWS).unwrap();
        let raw = rows.get(("p", id)).unwrap()?;
        Some(resolve_in(&tx, raw.value()).unwrap().into_owned())
    }

    /// Runs `f` in one write transaction with a fresh `Appender`, and commits.
    fn write(db: &Database, f: impl FnOnce(&mut Rows, &mut Values, &mut Appender)) {
        let tx = db.begin_write().unwrap();
        {
            let mut rows = tx.open_table(ROWS).unwrap();
            let mut values = tx.open_table(RECORD_VALUES).unwrap();
            f(&mut rows, &mut values, &mut Appender::default());
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_replaced_value_moves_to_the_end_and_leaves_nothing_behind() {
        let (_dir, db) = db();
        write(&db, |rows, values, a| {
            a.put(rows, values, ("p", "a"), b"one").unwrap();
            a.put(rows, values, ("p", "b"), b"two").unwrap();
        });
        assert_eq!(counts(&db), (2, 2));
        // In a later transaction, as in the same one: the old value goes, the new one is last.
        write(&db, |rows, values, a| {
            a.put(rows, values, ("p", "a"), b"three").unwrap();
            a.put(rows, values, ("p", "a"), b"four").unwrap();
            let last = values.last().unwrap().unwrap();
            assert_eq!(
                last.0.value(),
                3,
                "sequence goes on from the stored last key"
            );
            assert_eq!(last.1.value(), b"four");
        });
        assert_eq!(counts(&db), (2, 2));
        assert_eq!(read(&db, "a").unwrap(), b"four");
        assert_eq!(read(&db, "b").unwrap(), b"two");
        let tx = db.begin_read().unwrap();
        let raw = tx
            .open_table(ROWS)
            .unwrap()
            .get(("p", "a"))
            .unwrap()
            .unwrap();
        assert_eq!(codec::value_ref(raw.value()).unwrap(), Some(3));
    }

    #[test]
    fn take_removes_row_and_value_and_returns_the_value() {
        let (_dir, db) = db();
        write(&db, |rows, values, a| {
            a.put(rows, values, ("p", "a"), b"kept").unwrap();
            a.put(rows, values, ("p", "b"), b"taken").unwrap();
            // A row as schema version 4 wrote it: the value in place.
            rows.insert(("p", "c"), b"\x01inline".as_slice()).unwrap();
        });
        write(&db, |rows, values, _| {
            assert_eq!(take(rows, values, ("p", "b")).unwrap().unwrap(), b"taken");
            assert_eq!(
                take(rows, values, ("p", "c")).unwrap().unwrap(),
                b"\x01inline"
            );
            assert_eq!(take(rows, values, ("p", "b")).unwrap(), None);
        });
        assert_eq!(counts(&db), (1, 1));
        assert_eq!(read(&db, "a").unwrap(), b"kept");
    }

    #[test]
    fn inline_values_read_as_they_are_and_a_dangling_reference_is_an_error() {
        let (_dir, db) = db();
        write(&db, |rows, _, _| {
            rows.insert(("p", "old"), b"\x01{}".as_slice()).unwrap();
            rows.insert(("p", "lost"), codec::ValueRef::new(7).as_bytes())
                .unwrap();
            rows.insert(("p", "bad"), b"\x09\x01\x02".as_slice())
                .unwrap();
        });
        assert_eq!(read(&db, "old").unwrap(), b"\x01{}");
        let tx = db.begin_read().unwrap();
        let rows = tx.open_table(ROWS).unwrap();
        for id in ["lost", "bad"] {
            let raw = rows.get(("p", id)).unwrap().unwrap();
            match resolve_in(&tx, raw.value()) {
                Err(StoreError::Corrupt(_)) => {}
                other => panic!("{id}: expected a corrupt-value error, got {other:?}"),
            }
        }
    }

    /// A file written before schema version 5 and opened read-only has no `record_values`:
    /// values in place still read.
    #[test]
    fn a_file_without_the_values_table_reads_values_in_place() {
        let (_dir, db) = db();
        let tx = db.begin_write().unwrap();
        tx.open_table(ROWS)
            .unwrap()
            .insert(("p", "a"), b"\x01x".as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(read(&db, "a").unwrap(), b"\x01x");
    }

    /// The reason for the table: values under random ids leave redb's pages about two thirds
    /// full, the same values appended fill theirs.
    #[test]
    fn appended_values_fill_their_pages_where_values_keyed_by_random_ids_do_not() {
        use rand::{Rng, SeedableRng};
        let (_dir, db) = db();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let tx = db.begin_write().unwrap();
        {
            let mut rows = tx.open_table(ROWS).unwrap();
            let mut values = tx.open_table(RECORD_VALUES).unwrap();
            let mut by_id = tx.open_table(BY_ID).unwrap();
            let mut a = Appender::default();
            for _ in 0..4_000 {
                let id = format!("{:016x}", rng.r#gen::<u64>());
                let value: Vec<u8> = (0..rng.gen_range(300..700)).map(|_| rng.r#gen()).collect();
                a.put(&mut rows, &mut values, ("p", id.as_str()), &value)
                    .unwrap();
                by_id.insert(("p", id.as_str()), value.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let fill = |s: redb::TableStats| {
            s.stored_bytes() as f64
                / (s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes()) as f64
        };
        let appended = fill(tx.open_table(RECORD_VALUES).unwrap().stats().unwrap());
        let random = fill(tx.open_table(BY_ID).unwrap().stats().unwrap());
        assert!(
            appended > 0.85,
            "appended values fill {appended:.2} of their pages"
        );
        assert!(
            random < 0.75,
            "values by random id fill {random:.2} of theirs"
        );
    }
}
