//! SQLite backend: the embedded default, one file in WAL mode inside `--data-dir`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{
    CatalogSnapshot, ColumnType, CompactionEvent, DatabaseId, DatabaseSchema, NewParquetFile,
    NewTombstone, ParquetFile, ParquetFileId, SchemaChanges, TIME_COLUMN, TableId, TableSchema,
    Tombstone, TombstoneId, validate_database_name,
};
use crate::{COMPACTION_EVENTS_KEPT, Catalog, CatalogLimits, Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS databases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    -- The highest WAL sequence number handed out when the database was deleted.
    deleted_wal_cutoff INTEGER,
    -- Rows older than this many nanoseconds are not kept; NULL keeps everything.
    retention_ns INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS databases_live_name ON databases(name) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS tables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    database_id INTEGER NOT NULL REFERENCES databases(id),
    name TEXT NOT NULL,
    -- JSON array of tag names: the order rows are sorted by (see TableSchema::sort_key).
    sort_key TEXT,
    -- The table's own retention period in nanoseconds; NULL: its database's.
    retention_ns INTEGER,
    UNIQUE (database_id, name)
);
CREATE TABLE IF NOT EXISTS columns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_id INTEGER NOT NULL REFERENCES tables(id),
    name TEXT NOT NULL,
    column_type TEXT NOT NULL,
    UNIQUE (table_id, name)
);
CREATE TABLE IF NOT EXISTS parquet_files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_id INTEGER NOT NULL REFERENCES tables(id),
    partition_day INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size_bytes INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL,
    level INTEGER NOT NULL,
    min_sequence INTEGER NOT NULL,
    max_sequence INTEGER NOT NULL,
    -- The newest tombstone already applied to the file's rows (0: none).
    tombstones_applied INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS parquet_files_table ON parquet_files(table_id, partition_day);
-- Objects no file refers to any more (replaced by compaction), kept until garbage collection
-- deletes them after the grace period. `deleted_at`: milliseconds since the Unix epoch.
-- The newest compactions and their outcome (system.compaction_events).
CREATE TABLE IF NOT EXISTS compaction_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,
    table_id INTEGER NOT NULL,
    partition_day INTEGER NOT NULL,
    files_in INTEGER NOT NULL,
    files_out INTEGER NOT NULL,
    rows_in INTEGER NOT NULL,
    rows_out INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error TEXT
);
-- Range deletes: rows of a table in [min_time, max_time] whose tags match `predicate` (JSON
-- array of [tag, value] pairs, all must equal), written by WAL entries up to `wal_cutoff`.
CREATE TABLE IF NOT EXISTS tombstones (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_id INTEGER NOT NULL REFERENCES tables(id),
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL,
    predicate TEXT NOT NULL,
    wal_cutoff INTEGER NOT NULL
);
-- Dropped tables: their rows are gone and their names free; replay skips their WAL entries
-- up to `wal_cutoff`.
CREATE TABLE IF NOT EXISTS deleted_tables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    database_name TEXT NOT NULL,
    name TEXT NOT NULL,
    wal_cutoff INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deleted_objects (
    path TEXT PRIMARY KEY,
    deleted_at INTEGER NOT NULL
);
";

/// Columns to add: name and type.
type Columns<'a> = Vec<(&'a str, ColumnType)>;

/// Catalog in an SQLite file. Writers serialise on one connection; readers use the snapshot.
#[derive(Debug)]
pub struct SqliteCatalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Held for the whole check-and-commit of a change, so the snapshot read under it is current.
    conn: Mutex<Connection>,
    snapshot: RwLock<Arc<CatalogSnapshot>>,
    limits: CatalogLimits,
}

impl SqliteCatalog {
    /// Opens or creates the catalog file at `path` and loads the snapshot.
    pub fn open(path: &Path, limits: CatalogLimits) -> Result<Self> {
        let open_err = |source| Error::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // FULL: a committed schema change survives power loss before the write is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        migrate(&conn).map_err(open_err)?;
        let snapshot = load_snapshot(&conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                snapshot: RwLock::new(Arc::new(snapshot)),
                limits,
            }),
        })
    }

    /// Opens an in-memory catalog (tests).
    pub fn open_in_memory(limits: CatalogLimits) -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                snapshot: RwLock::new(Arc::new(CatalogSnapshot::default())),
                limits,
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(Error::Task)?
    }
}

#[async_trait::async_trait]
impl Catalog for SqliteCatalog {
    fn snapshot(&self) -> Arc<CatalogSnapshot> {
        Arc::clone(&self.inner.snapshot.read())
    }

    fn limits(&self) -> CatalogLimits {
        self.inner.limits
    }

    async fn create_database(
        &self,
        name: &str,
        retention_period_ns: Option<i64>,
    ) -> Result<Arc<DatabaseSchema>> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            validate_database_name(&name).map_err(|reason| Error::InvalidDatabaseName {
                name: name.clone(),
                reason,
            })?;
            let mut conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            if current.database(&name).is_some() {
                return Err(Error::DatabaseExists { name });
            }
            inner.check_database_limit(&current)?;
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO databases (name, retention_ns) VALUES (?1, ?2)",
                params![name, retention_period_ns],
            )?;
            let id = DatabaseId(tx.last_insert_rowid());
            tx.commit()?;
            let db = Arc::new(DatabaseSchema {
                id,
                name: name.into(),
                tables: BTreeMap::new(),
                retention_period_ns,
            });
            let mut next = (*current).clone();
            next.databases.insert(Arc::clone(&db.name), Arc::clone(&db));
            *inner.snapshot.write() = Arc::new(next);
            Ok(db)
        })
        .await
    }

    async fn apply(&self, changes: SchemaChanges) -> Result<Arc<CatalogSnapshot>> {
        self.blocking(move |inner| inner.apply(changes)).await
    }

    async fn delete_database(&self, name: &str, wal_cutoff: u64) -> Result<()> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            let conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            let Some(db) = current.database(&name) else {
                return Err(Error::DatabaseNotFound { name });
            };
            conn.execute(
                "UPDATE databases SET deleted = 1, deleted_wal_cutoff = ?2 WHERE id = ?1",
                params![db.id.0, wal_cutoff as i64],
            )?;
            let mut next = (*current).clone();
            // Its files leave the snapshot too: nothing reads them, and garbage collection
            // deletes what the snapshot does not list (as after a restart, see load_snapshot).
            if let Some(removed) = next.databases.remove(name.as_str()) {
                for table in removed.tables.values() {
                    next.parquet_files.remove(&table.id);
                    next.tombstones.remove(&table.id);
                }
            }
            let cutoff = next
                .deleted_wal_cutoffs
                .entry(Arc::from(name.as_str()))
                .or_insert(0);
            *cutoff = (*cutoff).max(wal_cutoff);
            *inner.snapshot.write() = Arc::new(next);
            Ok(())
        })
        .await
    }

    async fn delete_table(&self, database: &str, table: &str, wal_cutoff: u64) -> Result<()> {
        let (database, table) = (database.to_owned(), table.to_owned());
        self.blocking(move |inner| {
            let mut conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            let Some(db) = current.database(&database) else {
                return Err(Error::DatabaseNotFound { name: database });
            };
            let Some(schema) = db.table(&table) else {
                return Err(Error::TableNotFound { database, table });
            };
            let id = schema.id.0;
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO deleted_objects (path, deleted_at) \
                 SELECT path, ?2 FROM parquet_files WHERE table_id = ?1 \
                 ON CONFLICT (path) DO NOTHING",
                params![id, unix_ms()],
            )?;
            tx.execute("DELETE FROM parquet_files WHERE table_id = ?1", params![id])?;
            tx.execute("DELETE FROM tombstones WHERE table_id = ?1", params![id])?;
            tx.execute("DELETE FROM columns WHERE table_id = ?1", params![id])?;
            tx.execute("DELETE FROM tables WHERE id = ?1", params![id])?;
            tx.execute(
                "INSERT INTO deleted_tables (database_name, name, wal_cutoff) VALUES (?1, ?2, ?3)",
                params![database, table, wal_cutoff as i64],
            )?;
            tx.commit()?;
            let mut next = (*current).clone();
            let mut db = (**db).clone();
            db.tables.remove(table.as_str());
            next.databases.insert(Arc::clone(&db.name), Arc::new(db));
            next.parquet_files.remove(&TableId(id));
            next.tombstones.remove(&TableId(id));
            let cutoff = next
                .deleted_table_cutoffs
                .entry((Arc::from(database.as_str()), Arc::from(table.as_str())))
                .or_insert(0);
            *cutoff = (*cutoff).max(wal_cutoff);
            *inner.snapshot.write() = Arc::new(next);
            Ok(())
        })
        .await
    }

    async fn add_tombstone(
        &self,
        database: &str,
        table: &str,
        delete: NewTombstone,
    ) -> Result<Tombstone> {
        let (database, table) = (database.to_owned(), table.to_owned());
        self.blocking(move |inner| {
            let conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            let Some(db) = current.database(&database) else {
                return Err(Error::DatabaseNotFound { name: database });
            };
            let Some(schema) = db.table(&table) else {
                return Err(Error::TableNotFound { database, table });
            };
            conn.execute(
                "INSERT INTO tombstones (table_id, min_time, max_time, predicate, wal_cutoff) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    schema.id.0,
                    delete.min_time_ns,
                    delete.max_time_ns,
                    predicate_json(&delete.tags),
                    delete.wal_cutoff as i64
                ],
            )?;
            let tombstone = Tombstone {
                id: TombstoneId(conn.last_insert_rowid()),
                table_id: schema.id,
                delete,
            };
            let mut next = (*current).clone();
            let mut all = next.table_tombstones(schema.id).to_vec();
            all.push(tombstone.clone());
            next.tombstones.insert(schema.id, all.into());
            *inner.snapshot.write() = Arc::new(next);
            Ok(tombstone)
        })
        .await
    }

    async fn retire_tombstones(&self, wal_retained_from: u64) -> Result<usize> {
        self.blocking(move |inner| {
            let mut conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            let retired: Vec<&Tombstone> = current
                .tombstones
                .values()
                .flat_map(|t| t.iter())
                .filter(|t| {
                    t.delete.wal_cutoff < wal_retained_from
                        && !current
                            .table_files(t.table_id)
                            .iter()
                            .any(|f| t.is_pending_for(&f.file))
                })
                .collect();
            if retired.is_empty() {
                return Ok(0);
            }
            let tx = conn.transaction()?;
            {
                let mut forget = tx.prepare_cached("DELETE FROM tombstones WHERE id = ?1")?;
                for t in &retired {
                    forget.execute(params![t.id.0])?;
                }
            }
            tx.commit()?;
            let gone: std::collections::HashSet<TombstoneId> =
                retired.iter().map(|t| t.id).collect();
            let mut next = (*current).clone();
            for list in next.tombstones.values_mut() {
                if list.iter().any(|t| gone.contains(&t.id)) {
                    *list = list
                        .iter()
                        .filter(|t| !gone.contains(&t.id))
                        .cloned()
                        .collect();
                }
            }
            next.tombstones.retain(|_, list| !list.is_empty());
            *inner.snapshot.write() = Arc::new(next);
            Ok(gone.len())
        })
        .await
    }

    async fn add_parquet_files(&self, files: Vec<NewParquetFile>) -> Result<Vec<ParquetFile>> {
        self.blocking(move |inner| {
            let mut conn = inner.conn.lock();
            let tx = conn.transaction()?;
            let recorded = insert_files(&tx, files)?;
            tx.commit()?;
            let current = Arc::clone(&inner.snapshot.read());
            let mut next = (*current).clone();
            let mut by_table: BTreeMap<TableId, Vec<ParquetFile>> = BTreeMap::new();
            for f in &recorded {
                by_table.entry(f.file.table_id).or_default().push(f.clone());
            }
            for (table, added) in by_table {
                let mut files: Vec<ParquetFile> = next.table_files(table).to_vec();
                files.extend(added);
                files.sort_by_key(|f| (f.file.min_sequence, f.id));
                next.parquet_files.insert(table, files.into());
            }
            *inner.snapshot.write() = Arc::new(next);
            Ok(recorded)
        })
        .await
    }

    async fn set_retention_period(
        &self,
        name: &str,
        retention_period_ns: Option<i64>,
    ) -> Result<Arc<DatabaseSchema>> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            let conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            let Some(db) = current.database(&name) else {
                return Err(Error::DatabaseNotFound { name });
            };
            conn.execute(
                "UPDATE databases SET retention_ns = ?2 WHERE id = ?1",
                params![db.id.0, retention_period_ns],
            )?;
            let db = Arc::new(DatabaseSchema {
                retention_period_ns,
                ..(**db).clone()
            });
            let mut next = (*current).clone();
            next.databases.insert(Arc::clone(&db.name), Arc::clone(&db));
            *inner.snapshot.write() = Arc::new(next);
            Ok(db)
        })
        .await
    }

    async fn set_table_retention_period(
        &self,
        database: &str,
        table: &str,
        retention_period_ns: Option<i64>,
    ) -> Result<Arc<TableSchema>> {
        let (database, table) = (database.to_owned(), table.to_owned());
        self.blocking(move |inner| {
            let conn = inner.conn.lock();
            let current = Arc::clone(&inner.snapshot.read());
            let Some(db) = current.database(&database) else {
                return Err(Error::DatabaseNotFound { name: database });
            };
            let Some(schema) = db.table(&table) else {
                return Err(Error::TableNotFound { database, table });
            };
            conn.execute(
                "UPDATE tables SET retention_ns = ?2 WHERE id = ?1",
                params![schema.id.0, retention_period_ns],
            )?;
            let schema = Arc::new(TableSchema {
                retention_period_ns,
                ..(**schema).clone()
            });
            let mut db = (**db).clone();
            db.tables
                .insert(Arc::clone(&schema.name), Arc::clone(&schema));
            let mut next = (*current).clone();
            next.databases.insert(Arc::clone(&db.name), Arc::new(db));
            *inner.snapshot.write() = Arc::new(next);
            Ok(schema)
        })
        .await
    }

    async fn replace_parquet_files(
        &self,
        removed: Vec<ParquetFileId>,
        added: Vec<NewParquetFile>,
    ) -> Result<Vec<ParquetFile>> {
        self.blocking(move |inner| {
            let mut conn = inner.conn.lock();
            let tx = conn.transaction()?;
            let now_ms = unix_ms();
            let mut missing = 0;
            {
                let mut path_of =
                    tx.prepare_cached("SELECT path FROM parquet_files WHERE id = ?1")?;
                let mut forget = tx.prepare_cached("DELETE FROM parquet_files WHERE id = ?1")?;
                let mut drop_object = tx.prepare_cached(
                    "INSERT INTO deleted_objects (path, deleted_at) VALUES (?1, ?2) \
                     ON CONFLICT (path) DO NOTHING",
                )?;
                for id in &removed {
                    let path: Option<String> =
                        path_of.query_row(params![id.0], |r| r.get(0)).optional()?;
                    let Some(path) = path else {
                        missing += 1;
                        continue;
                    };
                    forget.execute(params![id.0])?;
                    drop_object.execute(params![path, now_ms])?;
                }
            }
            if missing > 0 {
                // Dropping the transaction rolls it back.
                return Err(Error::FilesChanged { missing });
            }
            if let Some(first) = added.first() {
                let newer_delete: bool = tx
                    .prepare_cached(
                        "SELECT 1 FROM tombstones WHERE table_id = ?1 AND id > ?2 LIMIT 1",
                    )?
                    .exists(params![first.table_id.0, first.tombstones_applied])?;
                if newer_delete {
                    return Err(Error::DeletedMeanwhile);
                }
            }
            let recorded = insert_files(&tx, added)?;
            tx.commit()?;
            let current = Arc::clone(&inner.snapshot.read());
            let mut next = (*current).clone();
            let removed: std::collections::HashSet<ParquetFileId> = removed.into_iter().collect();
            let tables: std::collections::BTreeSet<TableId> = next
                .parquet_files
                .iter()
                .filter(|(_, files)| files.iter().any(|f| removed.contains(&f.id)))
                .map(|(t, _)| *t)
                .chain(recorded.iter().map(|f| f.file.table_id))
                .collect();
            for table in tables {
                let mut files: Vec<ParquetFile> = next
                    .table_files(table)
                    .iter()
                    .filter(|f| !removed.contains(&f.id))
                    .cloned()
                    .collect();
                files.extend(
                    recorded
                        .iter()
                        .filter(|f| f.file.table_id == table)
                        .cloned(),
                );
                files.sort_by_key(|f| (f.file.min_sequence, f.id));
                next.parquet_files.insert(table, files.into());
            }
            *inner.snapshot.write() = Arc::new(next);
            Ok(recorded)
        })
        .await
    }

    async fn deleted_objects(&self, until_unix_ms: i64) -> Result<Vec<String>> {
        self.blocking(move |inner| {
            let conn = inner.conn.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT path FROM deleted_objects WHERE deleted_at <= ?1 ORDER BY deleted_at",
            )?;
            let paths = stmt
                .query_map(params![until_unix_ms], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(paths)
        })
        .await
    }

    async fn record_compaction_event(&self, event: CompactionEvent) -> Result<()> {
        self.blocking(move |inner| {
            let mut conn = inner.conn.lock();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO compaction_events (time_ns, table_id, partition_day, files_in, \
                 files_out, rows_in, rows_out, bytes_in, bytes_out, duration_ms, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    event.time_ns,
                    event.table_id.0,
                    event.partition_day,
                    event.files_in as i64,
                    event.files_out as i64,
                    event.rows_in as i64,
                    event.rows_out as i64,
                    event.bytes_in as i64,
                    event.bytes_out as i64,
                    event.duration_ms as i64,
                    event.error,
                ],
            )?;
            tx.execute(
                "DELETE FROM compaction_events WHERE id <= ?1",
                params![tx.last_insert_rowid() - COMPACTION_EVENTS_KEPT as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn compaction_events(&self) -> Result<Vec<CompactionEvent>> {
        self.blocking(move |inner| {
            let conn = inner.conn.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT time_ns, table_id, partition_day, files_in, files_out, rows_in, \
                 rows_out, bytes_in, bytes_out, duration_ms, error \
                 FROM compaction_events ORDER BY id DESC",
            )?;
            let events = stmt
                .query_map([], |r| {
                    Ok(CompactionEvent {
                        time_ns: r.get(0)?,
                        table_id: TableId(r.get(1)?),
                        partition_day: r.get(2)?,
                        files_in: r.get::<_, i64>(3)? as u64,
                        files_out: r.get::<_, i64>(4)? as u64,
                        rows_in: r.get::<_, i64>(5)? as u64,
                        rows_out: r.get::<_, i64>(6)? as u64,
                        bytes_in: r.get::<_, i64>(7)? as u64,
                        bytes_out: r.get::<_, i64>(8)? as u64,
                        duration_ms: r.get::<_, i64>(9)? as u64,
                        error: r.get(10)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(events)
        })
        .await
    }

    async fn forget_deleted_objects(&self, paths: Vec<String>) -> Result<()> {
        self.blocking(move |inner| {
            let mut conn = inner.conn.lock();
            let tx = conn.transaction()?;
            {
                let mut forget =
                    tx.prepare_cached("DELETE FROM deleted_objects WHERE path = ?1")?;
                for path in &paths {
                    forget.execute(params![path])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// The stored form of a tombstone's `tag = value` terms: a JSON array of pairs.
fn predicate_json(tags: &[(Arc<str>, Arc<str>)]) -> String {
    let pairs: Vec<[&str; 2]> = tags.iter().map(|(t, v)| [t.as_ref(), v.as_ref()]).collect();
    serde_json::to_string(&pairs).expect("pairs of strings serialise")
}

fn parse_predicate(json: &str) -> Result<Vec<(Arc<str>, Arc<str>)>> {
    let pairs: Vec<[String; 2]> = serde_json::from_str(json)
        .map_err(|_| Error::CorruptRow(format!("tombstone predicate `{json}`")))?;
    Ok(pairs
        .into_iter()
        .map(|[t, v]| (Arc::from(t), Arc::from(v)))
        .collect())
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Inserts files in the transaction and returns them with their ids.
fn insert_files(
    tx: &rusqlite::Transaction<'_>,
    files: Vec<NewParquetFile>,
) -> Result<Vec<ParquetFile>> {
    let mut recorded = Vec::with_capacity(files.len());
    let mut insert = tx.prepare_cached(
        "INSERT INTO parquet_files (table_id, partition_day, path, size_bytes, row_count, \
         min_time, max_time, level, min_sequence, max_sequence, tombstones_applied) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for file in files {
        insert.execute(params![
            file.table_id.0,
            file.partition_day,
            file.path,
            file.size_bytes as i64,
            file.row_count as i64,
            file.min_time_ns,
            file.max_time_ns,
            file.level,
            file.min_sequence as i64,
            file.max_sequence as i64,
            file.tombstones_applied,
        ])?;
        recorded.push(ParquetFile {
            id: ParquetFileId(tx.last_insert_rowid()),
            file,
        });
    }
    Ok(recorded)
}

impl Inner {
    fn check_database_limit(&self, current: &CatalogSnapshot) -> Result<()> {
        if current.databases.len() >= self.limits.max_databases {
            return Err(Error::TooManyDatabases {
                limit: self.limits.max_databases,
            });
        }
        Ok(())
    }

    fn apply(&self, changes: SchemaChanges) -> Result<Arc<CatalogSnapshot>> {
        let mut conn = self.conn.lock();
        let current = Arc::clone(&self.snapshot.read());
        let db_name = changes.database.as_str();
        let existing_db = current.database(db_name).cloned();

        // Work out what is really new under the lock: another writer may have added it since
        // the caller's snapshot.
        let mut new_tables: Vec<(&str, Columns<'_>)> = Vec::new();
        let mut new_columns: Vec<(TableId, &str, Columns<'_>)> = Vec::new();
        let table_count = existing_db.as_ref().map_or(0, |db| db.tables.len());
        for (table, columns) in &changes.tables {
            match existing_db.as_ref().and_then(|db| db.table(table)) {
                Some(schema) => {
                    let mut added = Vec::new();
                    for (column, &sent) in columns {
                        match schema.column_type(column) {
                            Some(existing) if existing == sent => {}
                            Some(existing) => {
                                return Err(Error::TypeConflict {
                                    table: table.clone(),
                                    column: column.clone(),
                                    existing,
                                    sent,
                                });
                            }
                            None => added.push((column.as_str(), sent)),
                        }
                    }
                    if schema.columns.len() + added.len() > self.limits.max_columns_per_table {
                        return Err(Error::TooManyColumns {
                            database: db_name.to_owned(),
                            table: table.clone(),
                            limit: self.limits.max_columns_per_table,
                        });
                    }
                    if !added.is_empty() {
                        new_columns.push((schema.id, table.as_str(), added));
                    }
                }
                None => {
                    let mut cols: Vec<(&str, ColumnType)> =
                        columns.iter().map(|(c, t)| (c.as_str(), *t)).collect();
                    if !columns.contains_key(TIME_COLUMN) {
                        cols.push((TIME_COLUMN, ColumnType::Time));
                    }
                    if cols.len() > self.limits.max_columns_per_table {
                        return Err(Error::TooManyColumns {
                            database: db_name.to_owned(),
                            table: table.clone(),
                            limit: self.limits.max_columns_per_table,
                        });
                    }
                    new_tables.push((table.as_str(), cols));
                }
            }
        }
        if table_count + new_tables.len() > self.limits.max_tables_per_database {
            return Err(Error::TooManyTables {
                database: db_name.to_owned(),
                limit: self.limits.max_tables_per_database,
            });
        }
        if existing_db.is_some() && new_tables.is_empty() && new_columns.is_empty() {
            return Ok(current);
        }
        if existing_db.is_none() {
            validate_database_name(db_name).map_err(|reason| Error::InvalidDatabaseName {
                name: db_name.to_owned(),
                reason,
            })?;
            self.check_database_limit(&current)?;
        }

        let tx = conn.transaction()?;
        let db_id = match &existing_db {
            Some(db) => db.id,
            None => {
                tx.execute("INSERT INTO databases (name) VALUES (?1)", params![db_name])?;
                DatabaseId(tx.last_insert_rowid())
            }
        };
        let mut db = existing_db
            .map(|db| (*db).clone())
            .unwrap_or_else(|| DatabaseSchema {
                id: db_id,
                name: db_name.into(),
                tables: BTreeMap::new(),
                retention_period_ns: None,
            });
        {
            let mut insert_table = tx.prepare_cached(
                "INSERT INTO tables (database_id, name, sort_key, retention_ns) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut insert_column = tx.prepare_cached(
                "INSERT INTO columns (table_id, name, column_type) VALUES (?1, ?2, ?3)",
            )?;
            for (table, columns) in new_tables {
                let sort_key: Vec<String> =
                    changes.sort_keys.get(table).cloned().unwrap_or_default();
                let sort_key_json =
                    serde_json::to_string(&sort_key).expect("a list of strings serialises");
                let retention_period_ns = changes.retention_periods.get(table).copied();
                insert_table.execute(params![
                    db_id.0,
                    table,
                    sort_key_json,
                    retention_period_ns
                ])?;
                let table_id = TableId(tx.last_insert_rowid());
                let mut schema = TableSchema {
                    id: table_id,
                    name: table.into(),
                    columns: BTreeMap::new(),
                    sort_key: sort_key.into_iter().map(Arc::from).collect(),
                    retention_period_ns,
                };
                for (column, column_type) in columns {
                    insert_column.execute(params![table_id.0, column, column_type.as_str()])?;
                    schema.columns.insert(column.into(), column_type);
                }
                db.tables.insert(Arc::clone(&schema.name), Arc::new(schema));
            }
            for (table_id, table, columns) in new_columns {
                let mut schema = (**db.tables.get(table).expect("table came from this db")).clone();
                for (column, column_type) in columns {
                    insert_column.execute(params![table_id.0, column, column_type.as_str()])?;
                    schema.columns.insert(column.into(), column_type);
                }
                db.tables.insert(Arc::clone(&schema.name), Arc::new(schema));
            }
        }
        tx.commit()?;
        let mut next = (*current).clone();
        next.databases.insert(Arc::clone(&db.name), Arc::new(db));
        let next = Arc::new(next);
        *self.snapshot.write() = Arc::clone(&next);
        Ok(next)
    }
}

/// Brings a catalog file written by an older version up to [`SCHEMA`].
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_retention: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('databases') WHERE name = 'retention_ns'")?
        .exists([])?;
    if !has_retention {
        // Databases created before retention existed keep everything.
        conn.execute("ALTER TABLE databases ADD COLUMN retention_ns INTEGER", [])?;
    }
    let has_table_retention: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('tables') WHERE name = 'retention_ns'")?
        .exists([])?;
    if !has_table_retention {
        conn.execute("ALTER TABLE tables ADD COLUMN retention_ns INTEGER", [])?;
    }
    let has_tombstones_applied: bool = conn
        .prepare(
            "SELECT 1 FROM pragma_table_info('parquet_files') WHERE name = 'tombstones_applied'",
        )?
        .exists([])?;
    if !has_tombstones_applied {
        conn.execute(
            "ALTER TABLE parquet_files ADD COLUMN tombstones_applied INTEGER NOT NULL DEFAULT 0",
            [],
        )?;
    }
    let has_sort_key: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('tables') WHERE name = 'sort_key'")?
        .exists([])?;
    if !has_sort_key {
        // Tables created before sort keys existed sort their tags by name: an empty key.
        conn.execute("ALTER TABLE tables ADD COLUMN sort_key TEXT", [])?;
    }
    Ok(())
}

fn load_snapshot(conn: &Connection) -> Result<CatalogSnapshot> {
    let mut snapshot = CatalogSnapshot::default();
    let mut by_id: BTreeMap<i64, DatabaseSchema> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT name, max(deleted_wal_cutoff) FROM databases WHERE deleted = 1 GROUP BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    for row in rows {
        let (name, cutoff) = row?;
        snapshot
            .deleted_wal_cutoffs
            .insert(name.into(), cutoff.unwrap_or(0) as u64);
    }
    let mut stmt =
        conn.prepare("SELECT id, name, retention_ns FROM databases WHERE deleted = 0")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (id, name, retention_period_ns) = row?;
        by_id.insert(
            id,
            DatabaseSchema {
                id: DatabaseId(id),
                name: name.into(),
                tables: BTreeMap::new(),
                retention_period_ns,
            },
        );
    }
    let mut tables: BTreeMap<i64, (i64, TableSchema)> = BTreeMap::new();
    let mut stmt =
        conn.prepare("SELECT id, database_id, name, sort_key, retention_ns FROM tables")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (id, db_id, name, sort_key, retention_period_ns) = row?;
        let sort_key: Vec<String> = sort_key
            .and_then(|k| serde_json::from_str(&k).ok())
            .unwrap_or_default();
        if by_id.contains_key(&db_id) {
            tables.insert(
                id,
                (
                    db_id,
                    TableSchema {
                        id: TableId(id),
                        name: name.into(),
                        columns: BTreeMap::new(),
                        sort_key: sort_key.into_iter().map(Arc::from).collect(),
                        retention_period_ns,
                    },
                ),
            );
        }
    }
    let mut stmt = conn.prepare("SELECT table_id, name, column_type FROM columns")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (table_id, name, column_type) = row?;
        if let Some((_, table)) = tables.get_mut(&table_id) {
            let column_type =
                ColumnType::parse(&column_type).ok_or(Error::UnknownColumnType(column_type))?;
            table.columns.insert(name.into(), column_type);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, table_id, partition_day, path, size_bytes, row_count, min_time, max_time, \
         level, min_sequence, max_sequence, tombstones_applied FROM parquet_files \
         ORDER BY table_id, min_sequence, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ParquetFile {
            id: ParquetFileId(r.get(0)?),
            file: NewParquetFile {
                table_id: TableId(r.get(1)?),
                partition_day: r.get(2)?,
                path: r.get(3)?,
                size_bytes: r.get::<_, i64>(4)? as u64,
                row_count: r.get::<_, i64>(5)? as u64,
                min_time_ns: r.get(6)?,
                max_time_ns: r.get(7)?,
                level: r.get(8)?,
                min_sequence: r.get::<_, i64>(9)? as u64,
                max_sequence: r.get::<_, i64>(10)? as u64,
                tombstones_applied: r.get(11)?,
            },
        })
    })?;
    let mut files: BTreeMap<TableId, Vec<ParquetFile>> = BTreeMap::new();
    for row in rows {
        let f = row?;
        // Files of deleted databases stay out (garbage collection removes them); their
        // sequence numbers are below the database's WAL cutoff, which the snapshot keeps.
        if tables.contains_key(&f.file.table_id.0) {
            files.entry(f.file.table_id).or_default().push(f);
        }
    }
    snapshot.parquet_files = files.into_iter().map(|(t, f)| (t, f.into())).collect();
    let mut stmt = conn.prepare(
        "SELECT id, table_id, min_time, max_time, predicate, wal_cutoff FROM tombstones \
         ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut tombstones: BTreeMap<TableId, Vec<Tombstone>> = BTreeMap::new();
    for row in rows {
        let (id, table_id, min_time_ns, max_time_ns, predicate, wal_cutoff) = row?;
        if !tables.contains_key(&table_id) {
            continue;
        }
        tombstones
            .entry(TableId(table_id))
            .or_default()
            .push(Tombstone {
                id: TombstoneId(id),
                table_id: TableId(table_id),
                delete: NewTombstone {
                    min_time_ns,
                    max_time_ns,
                    tags: parse_predicate(&predicate)?,
                    wal_cutoff: wal_cutoff as u64,
                },
            });
    }
    snapshot.tombstones = tombstones.into_iter().map(|(t, v)| (t, v.into())).collect();
    let mut stmt = conn.prepare(
        "SELECT database_name, name, max(wal_cutoff) FROM deleted_tables \
         GROUP BY database_name, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (database, table, cutoff) = row?;
        snapshot
            .deleted_table_cutoffs
            .insert((database.into(), table.into()), cutoff as u64);
    }
    for (_, (db_id, table)) in tables {
        let db = by_id
            .get_mut(&db_id)
            .expect("tables were filtered by live database");
        db.tables.insert(Arc::clone(&table.name), Arc::new(table));
    }
    for (_, db) in by_id {
        snapshot
            .databases
            .insert(Arc::clone(&db.name), Arc::new(db));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(db: &str, table: &str, cols: &[(&str, ColumnType)]) -> SchemaChanges {
        let mut c = SchemaChanges::new(db);
        c.tables.insert(
            table.to_owned(),
            cols.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect(),
        );
        c
    }

    #[tokio::test]
    async fn new_tables_and_columns_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
            cat.apply(changes(
                "db",
                "cpu",
                &[("host", ColumnType::Tag), ("usage", ColumnType::Float)],
            ))
            .await
            .unwrap();
            cat.apply(changes("db", "cpu", &[("load", ColumnType::Integer)]))
                .await
                .unwrap();
        }
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snap = cat.snapshot();
        let table = snap.database("db").unwrap().table("cpu").unwrap();
        assert_eq!(table.column_type("host"), Some(ColumnType::Tag));
        assert_eq!(table.column_type("usage"), Some(ColumnType::Float));
        assert_eq!(table.column_type("load"), Some(ColumnType::Integer));
        assert_eq!(table.column_type("time"), Some(ColumnType::Time));
    }

    #[tokio::test]
    async fn rejects_column_type_change_naming_both_types() {
        let cat = SqliteCatalog::open_in_memory(CatalogLimits::default()).unwrap();
        cat.apply(changes("db", "cpu", &[("usage", ColumnType::Float)]))
            .await
            .unwrap();
        let err = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::String)]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `usage` of table `cpu` is a float field, this write sends a string field"
        );
    }

    #[tokio::test]
    async fn limits_name_the_flag_to_raise() {
        let limits = CatalogLimits {
            max_databases: 1,
            max_tables_per_database: 1,
            max_columns_per_table: 3,
        };
        let cat = SqliteCatalog::open_in_memory(limits).unwrap();
        cat.apply(changes("a", "t1", &[("f", ColumnType::Float)]))
            .await
            .unwrap();
        let err = cat
            .apply(changes("b", "t1", &[("f", ColumnType::Float)]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--max-databases"), "{err}");
        let err = cat
            .apply(changes("a", "t2", &[("f", ColumnType::Float)]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("--max-tables-per-database"),
            "{err}"
        );
        cat.apply(changes("a", "t1", &[("g", ColumnType::Float)]))
            .await
            .unwrap();
        let err = cat
            .apply(changes("a", "t1", &[("h", ColumnType::Float)]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--max-columns-per-table"), "{err}");
    }

    #[tokio::test]
    async fn existing_columns_with_same_type_are_no_ops() {
        let cat = SqliteCatalog::open_in_memory(CatalogLimits::default()).unwrap();
        let first = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::Float)]))
            .await
            .unwrap();
        let second = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::Float)]))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[tokio::test]
    async fn deleted_database_is_gone_and_its_name_reusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        cat.create_database("db", None).await.unwrap();
        assert!(matches!(
            cat.create_database("db", None).await,
            Err(Error::DatabaseExists { .. })
        ));
        cat.delete_database("db", 7).await.unwrap();
        assert!(cat.snapshot().database("db").is_none());
        assert!(matches!(
            cat.delete_database("db", 8).await,
            Err(Error::DatabaseNotFound { .. })
        ));
        let again = cat.create_database("db", None).await.unwrap();
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snapshot = cat.snapshot();
        assert_eq!(snapshot.database("db").unwrap().id, again.id);
        assert!(
            snapshot.is_deleted_data("db", "cpu", 7),
            "entries up to the cutoff are the old database's"
        );
        assert!(
            !snapshot.is_deleted_data("db", "cpu", 8),
            "later entries belong to the new one"
        );
    }

    #[tokio::test]
    async fn invalid_database_names_are_rejected() {
        let cat = SqliteCatalog::open_in_memory(CatalogLimits::default()).unwrap();
        for bad in ["", "bad name", "_x", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(
                    cat.create_database(bad, None).await,
                    Err(Error::InvalidDatabaseName { .. })
                ),
                "{bad}"
            );
        }
        cat.create_database("ok_name-1", None).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_writers_never_overshoot_the_column_limit() {
        let limits = CatalogLimits {
            max_columns_per_table: 10,
            ..CatalogLimits::default()
        };
        let cat = Arc::new(SqliteCatalog::open_in_memory(limits).unwrap());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let cat = Arc::clone(&cat);
            tasks.push(tokio::spawn(async move {
                cat.apply(changes("db", "t", &[(&format!("c{i}"), ColumnType::Float)]))
                    .await
            }));
        }
        let ok = futures_ok(tasks).await;
        assert_eq!(ok, 9, "time plus nine fields fit in ten columns");
        assert_eq!(
            cat.snapshot()
                .database("db")
                .unwrap()
                .table("t")
                .unwrap()
                .columns
                .len(),
            10
        );
    }

    async fn futures_ok(
        tasks: Vec<tokio::task::JoinHandle<Result<Arc<CatalogSnapshot>>>>,
    ) -> usize {
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        ok
    }

    #[tokio::test]
    async fn replacing_files_is_all_or_nothing_and_lists_the_replaced_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snap = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::Float)]))
            .await
            .unwrap();
        let table = snap.database("db").unwrap().table("cpu").unwrap().id;
        let inputs = cat
            .add_parquet_files(vec![
                file(table, "db/cpu/2016-01-01/a.parquet", (1, 4)),
                file(table, "db/cpu/2016-01-01/b.parquet", (5, 9)),
            ])
            .await
            .unwrap();
        // Persisted while the compaction ran: not an input, stays.
        cat.add_parquet_files(vec![file(table, "db/cpu/2016-01-01/c.parquet", (10, 12))])
            .await
            .unwrap();
        let merged = NewParquetFile {
            level: 1,
            ..file(table, "db/cpu/2016-01-01/ab.parquet", (1, 9))
        };
        let ids: Vec<ParquetFileId> = inputs.iter().map(|f| f.id).collect();
        cat.replace_parquet_files(ids.clone(), vec![merged.clone()])
            .await
            .unwrap();
        // A second swap of the same inputs finds them gone and changes nothing.
        let err = cat
            .replace_parquet_files(
                ids,
                vec![file(table, "db/cpu/2016-01-01/x.parquet", (1, 9))],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::FilesChanged { missing: 2 }), "{err}");
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snapshot = cat.snapshot();
        let paths: Vec<&str> = snapshot
            .table_files(table)
            .iter()
            .map(|f| f.file.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "db/cpu/2016-01-01/ab.parquet",
                "db/cpu/2016-01-01/c.parquet"
            ]
        );
        let mut dropped = cat.deleted_objects(i64::MAX).await.unwrap();
        dropped.sort();
        assert_eq!(
            dropped,
            ["db/cpu/2016-01-01/a.parquet", "db/cpu/2016-01-01/b.parquet"]
        );
        assert!(
            cat.deleted_objects(0).await.unwrap().is_empty(),
            "dropped just now"
        );
        cat.forget_deleted_objects(dropped).await.unwrap();
        assert!(cat.deleted_objects(i64::MAX).await.unwrap().is_empty());
    }

    fn file(table: TableId, path: &str, sequences: (u64, u64)) -> NewParquetFile {
        NewParquetFile {
            table_id: table,
            partition_day: 16_801,
            path: path.to_owned(),
            size_bytes: 1234,
            row_count: 10,
            min_time_ns: 1,
            max_time_ns: 2,
            level: 0,
            min_sequence: sequences.0,
            max_sequence: sequences.1,
            tombstones_applied: 0,
        }
    }

    #[tokio::test]
    async fn a_catalog_from_before_sort_keys_opens_with_tags_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE databases (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, \
                 deleted INTEGER NOT NULL DEFAULT 0, deleted_wal_cutoff INTEGER);
                 CREATE TABLE tables (id INTEGER PRIMARY KEY AUTOINCREMENT, database_id INTEGER NOT NULL, \
                 name TEXT NOT NULL, UNIQUE (database_id, name));
                 CREATE TABLE columns (id INTEGER PRIMARY KEY AUTOINCREMENT, table_id INTEGER NOT NULL, \
                 name TEXT NOT NULL, column_type TEXT NOT NULL, UNIQUE (table_id, name));
                 INSERT INTO databases (name) VALUES ('db');
                 INSERT INTO tables (database_id, name) VALUES (1, 'cpu');
                 INSERT INTO columns (table_id, name, column_type) VALUES (1, 'host', 'tag');",
            )
            .unwrap();
        }
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let table = Arc::clone(cat.snapshot().database("db").unwrap().table("cpu").unwrap());
        assert!(table.sort_key.is_empty());
        let mut changes = changes(
            "db",
            "mem",
            &[("b", ColumnType::Tag), ("a", ColumnType::Tag)],
        );
        changes
            .sort_keys
            .insert("mem".into(), vec!["b".into(), "a".into()]);
        cat.apply(changes).await.unwrap();
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let mem = Arc::clone(cat.snapshot().database("db").unwrap().table("mem").unwrap());
        assert_eq!(mem.sorted_tags(), ["b", "a"]);
    }

    #[tokio::test]
    async fn parquet_files_are_recorded_together_and_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snap = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::Float)]))
            .await
            .unwrap();
        let table = snap.database("db").unwrap().table("cpu").unwrap().id;
        cat.add_parquet_files(vec![file(table, "db/cpu/2016-01-01/b.parquet", (5, 9))])
            .await
            .unwrap();
        cat.add_parquet_files(vec![file(table, "db/cpu/2016-01-01/a.parquet", (1, 4))])
            .await
            .unwrap();
        // A batch with a path already recorded records nothing of the batch.
        let err = cat
            .add_parquet_files(vec![
                file(table, "db/cpu/2016-01-01/c.parquet", (10, 12)),
                file(table, "db/cpu/2016-01-01/a.parquet", (13, 14)),
            ])
            .await;
        assert!(err.is_err());
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snapshot = cat.snapshot();
        let files = snapshot.table_files(table);
        let paths: Vec<&str> = files.iter().map(|f| f.file.path.as_str()).collect();
        assert_eq!(
            paths,
            ["db/cpu/2016-01-01/a.parquet", "db/cpu/2016-01-01/b.parquet"]
        );
        assert_eq!(
            files[0].file,
            file(table, "db/cpu/2016-01-01/a.parquet", (1, 4))
        );
    }

    #[tokio::test]
    async fn a_deleted_table_frees_its_name_drops_its_files_and_stays_deleted_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snap = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::Float)]))
            .await
            .unwrap();
        let old = snap.database("db").unwrap().table("cpu").unwrap().id;
        cat.add_parquet_files(vec![file(old, "db/cpu/2016-01-01/a.parquet", (1, 4))])
            .await
            .unwrap();
        cat.delete_table("db", "cpu", 7).await.unwrap();
        let err = cat.delete_table("db", "cpu", 8).await.unwrap_err();
        assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
        assert_eq!(
            cat.deleted_objects(i64::MAX).await.unwrap(),
            ["db/cpu/2016-01-01/a.parquet"]
        );
        // The name is free again: a write creates a new, empty table.
        let snap = cat
            .apply(changes("db", "cpu", &[("usage", ColumnType::Integer)]))
            .await
            .unwrap();
        let new = snap.database("db").unwrap().table("cpu").unwrap().id;
        assert_ne!(new, old);
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snapshot = cat.snapshot();
        let cpu = snapshot.database("db").unwrap().table("cpu").unwrap();
        assert_eq!(cpu.column_type("usage"), Some(ColumnType::Integer));
        assert!(snapshot.table_files(old).is_empty());
        assert!(snapshot.is_deleted_data("db", "cpu", 7));
        assert!(!snapshot.is_deleted_data("db", "cpu", 8));
        assert!(!snapshot.is_deleted_data("db", "mem", 7));
        assert_eq!(snapshot.highest_sequence(), 7);
    }

    /// A catalog at `path` with table `db.cpu` (tag `host`) and one file of WAL entries 1-4.
    async fn cpu_with_one_file(
        path: &std::path::Path,
    ) -> (SqliteCatalog, TableId, Vec<ParquetFile>) {
        let cat = SqliteCatalog::open(path, CatalogLimits::default()).unwrap();
        let snap = cat
            .apply(changes("db", "cpu", &[("host", ColumnType::Tag)]))
            .await
            .unwrap();
        let table = snap.database("db").unwrap().table("cpu").unwrap().id;
        let files = cat
            .add_parquet_files(vec![file(table, "db/cpu/2016-01-01/a.parquet", (1, 4))])
            .await
            .unwrap();
        (cat, table, files)
    }

    #[tokio::test]
    async fn tombstones_survive_reopen_and_a_merge_that_missed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let (cat, table, inputs) = cpu_with_one_file(&path).await;
        let delete = NewTombstone {
            min_time_ns: 0,
            max_time_ns: 10,
            tags: vec![("host".into(), "a 'quoted' \"name\"".into())],
            wal_cutoff: 4,
        };
        let tombstone = cat
            .add_tombstone("db", "cpu", delete.clone())
            .await
            .unwrap();
        assert!(tombstone.is_pending_for(&inputs[0].file));
        let err = cat
            .add_tombstone("db", "mem", delete.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TableNotFound { .. }), "{err}");

        // A merge planned before the delete does not carry it: refused, nothing changes.
        let stale = file(table, "db/cpu/2016-01-01/m.parquet", (1, 4));
        let err = cat
            .replace_parquet_files(vec![inputs[0].id], vec![stale.clone()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DeletedMeanwhile), "{err}");
        assert_eq!(cat.snapshot().table_files(table).len(), 1);
        let merged = NewParquetFile {
            tombstones_applied: tombstone.id.0,
            ..stale
        };
        assert!(!tombstone.is_pending_for(&merged));
        cat.replace_parquet_files(vec![inputs[0].id], vec![merged.clone()])
            .await
            .unwrap();

        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        let snapshot = cat.snapshot();
        assert_eq!(
            snapshot.table_tombstones(table),
            std::slice::from_ref(&tombstone)
        );
        assert_eq!(snapshot.newest_tombstone(table), tombstone.id.0);
        assert_eq!(snapshot.table_files(table)[0].file, merged);
        assert_eq!(snapshot.highest_sequence(), 4);
    }

    #[tokio::test]
    async fn a_table_keeps_its_own_retention_period_over_its_databases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        cat.create_database("db", Some(1_000)).await.unwrap();
        let mut create = changes("db", "cpu", &[("host", ColumnType::Tag)]);
        create.retention_periods.insert("cpu".into(), 10);
        cat.apply(create).await.unwrap();
        cat.apply(changes("db", "mem", &[("host", ColumnType::Tag)]))
            .await
            .unwrap();
        let cutoff = |cat: &SqliteCatalog, table: &str| {
            let snapshot = cat.snapshot();
            let db = snapshot.database("db").unwrap();
            db.retention_cutoff_ns(db.table(table).unwrap(), 5_000)
        };
        assert_eq!(cutoff(&cat, "cpu"), Some(4_990));
        assert_eq!(cutoff(&cat, "mem"), Some(4_000), "the database's period");
        cat.set_table_retention_period("db", "mem", Some(100))
            .await
            .unwrap();
        cat.set_table_retention_period("db", "cpu", None)
            .await
            .unwrap();
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        assert_eq!(cutoff(&cat, "cpu"), Some(4_000));
        assert_eq!(cutoff(&cat, "mem"), Some(4_900));
        let err = cat
            .set_table_retention_period("db", "nope", None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_tombstone_is_retired_once_no_file_and_no_wal_entry_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let (cat, table, old) = cpu_with_one_file(&path).await;
        let delete = NewTombstone {
            min_time_ns: 0,
            max_time_ns: 10,
            tags: vec![],
            wal_cutoff: 4,
        };
        let tombstone = cat.add_tombstone("db", "cpu", delete).await.unwrap();
        // The WAL still holds entries it covers.
        assert_eq!(cat.retire_tombstones(4).await.unwrap(), 0);
        // A file still holds rows of it.
        assert_eq!(cat.retire_tombstones(5).await.unwrap(), 0);
        let merged = NewParquetFile {
            tombstones_applied: tombstone.id.0,
            ..file(table, "db/cpu/2016-01-01/m.parquet", (1, 4))
        };
        cat.replace_parquet_files(vec![old[0].id], vec![merged])
            .await
            .unwrap();
        assert_eq!(cat.retire_tombstones(5).await.unwrap(), 1);
        assert!(cat.snapshot().table_tombstones(table).is_empty());
        drop(cat);
        let cat = SqliteCatalog::open(&path, CatalogLimits::default()).unwrap();
        assert!(cat.snapshot().table_tombstones(table).is_empty());
    }
}
