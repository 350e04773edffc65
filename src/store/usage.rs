//! Where the bytes of the database file go: per table, what its rows hold, what the B-tree
//! spends on itself, and what is allocated but unused. Read-only (`sightline disk-usage`, the
//! benchmarks); a second process can run it beside the server.

use redb::{
    MultimapTableHandle as _, ReadableTableMetadata as _, TableDefinition, TableHandle as _,
};
use serde::Serialize;

use super::tables::{self, TableVisitor};
use super::{Store, StoreError};

#[derive(Debug, Serialize)]
pub struct TableUsage {
    pub table: String,
    pub rows: u64,
    /// Key and value bytes of the rows.
    pub stored_bytes: u64,
    /// Page headers, branch pages and other B-tree overhead.
    pub metadata_bytes: u64,
    /// Allocated to the table but holding nothing.
    pub fragmented_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct DiskUsage {
    pub file_bytes: u64,
    pub tables: Vec<TableUsage>,
}

struct Collect<'a> {
    tx: &'a redb::ReadTransaction,
    out: Vec<TableUsage>,
}

impl TableVisitor for Collect<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        // A file written by an older version, read beside its server, may lack newer tables.
        let t = match self.tx.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.out.push(usage(def.name(), t.len()?, t.stats()?));
        Ok(())
    }

    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: redb::MultimapTableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        let t = self.tx.open_multimap_table(def)?;
        self.out.push(usage(def.name(), t.len()?, t.stats()?));
        Ok(())
    }
}

impl Store {
    /// Per-table byte counts of the current snapshot, largest first.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let tx = self.read_tx()?;
        let mut c = Collect {
            tx: &tx,
            out: Vec::new(),
        };
        tables::visit_all(&mut c)?;
        c.out
            .sort_by_key(|t| std::cmp::Reverse(t.stored_bytes + t.metadata_bytes));
        let file_bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(DiskUsage {
            file_bytes,
            tables: c.out,
        })
    }
}

fn usage(table: &str, rows: u64, s: redb::TableStats) -> TableUsage {
    TableUsage {
        table: table.to_owned(),
        rows,
        stored_bytes: s.stored_bytes(),
        metadata_bytes: s.metadata_bytes(),
        fragmented_bytes: s.fragmented_bytes(),
    }
}
