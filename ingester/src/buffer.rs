//! The in-memory buffer: acknowledged rows per (database, table, partition = UTC day).
//!
//! Chunks are appended in sequence-number order (the ingester applies entries in WAL order), so
//! a partition's chunks are in write order. A read deduplicates a partition's chunks and puts
//! the result back as one chunk, so repeated queries do not redo the work and memory holds one
//! copy of each row.
//!
//! Persistence takes a partition's deduplicated head chunk ([`Buffer::begin_persist`]) and,
//! once the file is recorded in the catalog, drops it ([`Buffer::finish_persist`]). While a
//! persist runs, reads do not merge the head with newer chunks, so the rows being persisted
//! stay one chunk that can be dropped exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::error::ArrowError;
use parking_lot::{Mutex, RwLock};

use crate::dedup::dedup_sorted_blocks;
use crate::schema::{TIME_COLUMN, conform, merge_schemas};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
/// Rows per batch of a deduplicated partition: DataFusion's batch size.
const BLOCK_ROWS: usize = 8 * 1024;

/// UTC day number of a nanosecond timestamp: the partition key.
pub(crate) fn day_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(NANOS_PER_DAY)
}

/// (database, table).
type TableKey = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
pub(crate) struct Buffer {
    tables: RwLock<HashMap<TableKey, TableBuffer>>,
    size_bytes: AtomicUsize,
}

#[derive(Debug, Default)]
struct TableBuffer {
    partitions: BTreeMap<i64, PartitionBuffer>,
}

impl TableBuffer {
    /// Bytes of the rows of all its chunks (see [`size_bytes`]).
    fn size_bytes(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| &p.chunks)
            .map(|c| c.size_bytes)
            .sum()
    }
}

#[derive(Debug)]
struct PartitionBuffer {
    /// In sequence-number order.
    chunks: Vec<Chunk>,
    /// Union of the chunks' schemas, columns in name order.
    schema: SchemaRef,
    /// True when `chunks` is a single chunk that is already deduplicated.
    deduplicated: bool,
    /// Held while one reader deduplicates the partition, so concurrent queries wait for its
    /// result instead of each sorting the same rows.
    dedup_lock: Arc<Mutex<()>>,
    /// Set while a persist job writes the head chunk, which holds the rows of entries up to
    /// this sequence number.
    persisting_through: Option<u64>,
    /// The table's sort key ([`catalog::TableSchema::sort_key`]) when the partition was made;
    /// it never changes for a table.
    sort_key: Arc<[Arc<str>]>,
}

#[derive(Debug, Clone)]
struct Chunk {
    /// Lowest and highest sequence numbers of the entries whose rows the chunk holds.
    min_sequence: u64,
    sequence: u64,
    /// When the oldest of those rows reached the buffer.
    arrived: Instant,
    /// One batch as written, or a deduplication result in blocks of [`BLOCK_ROWS`] (in key
    /// order, each block its own allocation).
    batches: Vec<RecordBatch>,
    size_bytes: usize,
    /// The batch is a deduplication result: sorted by key, each key once.
    deduplicated: bool,
}

impl Buffer {
    pub(crate) fn size_bytes(&self) -> usize {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Adds one table's rows from the entry with `sequence`. Rows are split by UTC day.
    pub(crate) fn apply(
        &self,
        sequence: u64,
        database: &str,
        table: &str,
        sort_key: &Arc<[Arc<str>]>,
        batch: RecordBatch,
    ) -> Result<(), ArrowError> {
        self.apply_unpersisted(sequence, database, table, sort_key, batch, |_| false)
    }

    /// [`Buffer::apply`] without the rows of days for which `persisted(day)` says this entry's
    /// rows are already in a recorded file (WAL replay).
    pub(crate) fn apply_unpersisted(
        &self,
        sequence: u64,
        database: &str,
        table: &str,
        sort_key: &Arc<[Arc<str>]>,
        batch: RecordBatch,
        persisted: impl Fn(i64) -> bool,
    ) -> Result<(), ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let by_day = split_by_day(batch)?;
        let mut tables = self.tables.write();
        let key = (Arc::<str>::from(database), Arc::<str>::from(table));
        let table_buffer = tables.entry(key).or_default();
        for (day, batch) in by_day {
            if persisted(day) {
                continue;
            }
            let size_bytes = size_bytes(&batch);
            self.size_bytes.fetch_add(size_bytes, Ordering::Relaxed);
            let chunk = Chunk {
                min_sequence: sequence,
                sequence,
                arrived: Instant::now(),
                batches: vec![batch],
                size_bytes,
                deduplicated: false,
            };
            match table_buffer.partitions.get_mut(&day) {
                Some(p) => {
                    p.schema = merge_schemas(&p.schema, &chunk.batches[0].schema());
                    p.chunks.push(chunk);
                    p.deduplicated = false;
                }
                None => {
                    let schema = chunk.batches[0].schema();
                    let deduplicated = false;
                    table_buffer.partitions.insert(
                        day,
                        PartitionBuffer {
                            chunks: vec![chunk],
                            schema,
                            deduplicated,
                            dedup_lock: Arc::default(),
                            persisting_through: None,
                            sort_key: Arc::clone(sort_key),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Drops every table of a database.
    pub(crate) fn drop_database(&self, database: &str) {
        let mut tables = self.tables.write();
        tables.retain(|(db, _), table| {
            if db.as_ref() != database {
                return true;
            }
            self.size_bytes
                .fetch_sub(table.size_bytes(), Ordering::Relaxed);
            false
        });
    }

    /// Drops a table's rows.
    pub(crate) fn drop_table(&self, database: &str, table: &str) {
        let key = (Arc::<str>::from(database), Arc::<str>::from(table));
        if let Some(t) = self.tables.write().remove(&key) {
            self.size_bytes.fetch_sub(t.size_bytes(), Ordering::Relaxed);
        }
    }

    /// Removes the rows of a table that `delete` matches and returns how many. Chunks keep
    /// their sequence numbers (a persist in flight still finds its head), and filtering keeps
    /// a deduplicated chunk sorted and unique.
    pub(crate) fn delete_rows(
        &self,
        database: &str,
        table: &str,
        delete: &catalog::NewTombstone,
    ) -> Result<usize, ArrowError> {
        let key = (Arc::<str>::from(database), Arc::<str>::from(table));
        let mut tables = self.tables.write();
        let Some(t) = tables.get_mut(&key) else {
            return Ok(0);
        };
        let days = day_of(delete.min_time_ns)..=day_of(delete.max_time_ns);
        let mut removed = 0;
        for p in t.partitions.range_mut(days).map(|(_, p)| p) {
            for chunk in &mut p.chunks {
                let mut kept = Vec::with_capacity(chunk.batches.len());
                for batch in chunk.batches.drain(..) {
                    let rows = batch.num_rows();
                    let left = crate::delete::without_deleted(batch, [delete])?;
                    removed += rows - left.as_ref().map_or(0, RecordBatch::num_rows);
                    kept.extend(left);
                }
                chunk.batches = kept;
                let size: usize = chunk.batches.iter().map(size_bytes).sum();
                self.size_bytes.fetch_add(size, Ordering::Relaxed);
                self.size_bytes
                    .fetch_sub(chunk.size_bytes, Ordering::Relaxed);
                chunk.size_bytes = size;
            }
            // A chunk left empty stays while it is being persisted: the persist drops it.
            let persisting = p.persisting_through;
            p.chunks.retain(|c| {
                !c.batches.is_empty() || persisting.is_some_and(|through| c.sequence <= through)
            });
            p.deduplicated = p.chunks.len() == 1 && p.chunks[0].deduplicated;
        }
        t.partitions.retain(|_, p| !p.chunks.is_empty());
        if t.partitions.is_empty() {
            tables.remove(&key);
        }
        Ok(removed)
    }

    /// The deduplicated rows of a table whose partitions may hold rows in
    /// `[min_time_ns, max_time_ns]`, one sorted batch per partition, conformed to `schema`.
    pub(crate) fn read(
        &self,
        database: &str,
        table: &str,
        schema: &SchemaRef,
        min_time_ns: i64,
        max_time_ns: i64,
    ) -> Result<Vec<PartitionRows>, ArrowError> {
        if min_time_ns > max_time_ns {
            return Ok(vec![]);
        }
        let key = (Arc::<str>::from(database), Arc::<str>::from(table));
        let days: Vec<i64> = {
            let tables = self.tables.read();
            let Some(t) = tables.get(&key) else {
                return Ok(vec![]);
            };
            t.partitions
                .range(day_of(min_time_ns)..=day_of(max_time_ns))
                .map(|(d, _)| *d)
                .collect()
        };
        let mut out = Vec::with_capacity(days.len());
        for day in days {
            if let Some((batches, max_sequence)) = self.deduplicated_partition(&key, day)? {
                out.push(PartitionRows {
                    day,
                    max_sequence,
                    batches: batches
                        .iter()
                        .map(|b| conform(b, schema))
                        .collect::<Result<_, _>>()?,
                });
            }
        }
        Ok(out)
    }

    /// Deduplicates a partition outside the lock and swaps the merged prefix of its chunks for
    /// the result, unless a concurrent read already did.
    fn deduplicated_partition(
        &self,
        key: &TableKey,
        day: i64,
    ) -> Result<Option<(Vec<RecordBatch>, u64)>, ArrowError> {
        let dedup_lock = {
            let tables = self.tables.read();
            let Some(p) = tables.get(key).and_then(|t| t.partitions.get(&day)) else {
                return Ok(None);
            };
            if p.deduplicated {
                return Ok(Some((p.chunks[0].batches.clone(), p.chunks[0].sequence)));
            }
            Arc::clone(&p.dedup_lock)
        };
        let _dedup = dedup_lock.lock();
        // Look again: the reader we waited for may have done the work.
        let (chunks, schema, persisting, sort_key) = {
            let tables = self.tables.read();
            let Some(p) = tables.get(key).and_then(|t| t.partitions.get(&day)) else {
                return Ok(None);
            };
            if p.deduplicated {
                return Ok(Some((p.chunks[0].batches.clone(), p.chunks[0].sequence)));
            }
            (
                p.chunks.clone(),
                Arc::clone(&p.schema),
                p.persisting_through.is_some(),
                Arc::clone(&p.sort_key),
            )
        };
        let conformed = chunks
            .iter()
            .flat_map(|c| &c.batches)
            .map(|b| conform(b, &schema))
            .collect::<Result<Vec<_>, _>>()?;
        let head_batches = if chunks[0].deduplicated {
            chunks[0].batches.len()
        } else {
            0
        };
        let merged = dedup_sorted_blocks(&schema, &conformed, head_batches, BLOCK_ROWS, &sort_key)?;
        let merged_sequence = chunks.last().expect("partitions are never empty").sequence;
        if persisting {
            // The head chunk is being persisted and must stay apart; keep the result for this
            // read only.
            return Ok(Some((merged, merged_sequence)));
        }
        let merged_size: usize = merged.iter().map(size_bytes).sum();

        let mut tables = self.tables.write();
        if let Some(p) = tables.get_mut(key).and_then(|t| t.partitions.get_mut(&day)) {
            let unchanged_prefix = p.persisting_through.is_none()
                && p.chunks.len() >= chunks.len()
                && p.chunks[chunks.len() - 1].sequence == merged_sequence
                && p.chunks[0].sequence == chunks[0].sequence;
            if unchanged_prefix {
                let old: usize = p.chunks[..chunks.len()].iter().map(|c| c.size_bytes).sum();
                p.chunks.splice(
                    ..chunks.len(),
                    [Chunk {
                        min_sequence: chunks.iter().map(|c| c.min_sequence).min().unwrap_or(0),
                        sequence: merged_sequence,
                        arrived: chunks
                            .iter()
                            .map(|c| c.arrived)
                            .min()
                            .unwrap_or_else(Instant::now),
                        batches: merged.clone(),
                        size_bytes: merged_size,
                        deduplicated: true,
                    }],
                );
                p.deduplicated = p.chunks.len() == 1;
                self.size_bytes.fetch_add(merged_size, Ordering::Relaxed);
                self.size_bytes.fetch_sub(old, Ordering::Relaxed);
            }
        }
        Ok(Some((merged, merged_sequence)))
    }

    /// Partitions due for persistence, most urgent first: those whose oldest rows arrived at
    /// least `max_age` ago, oldest first; with `under_pressure`, then every other partition,
    /// largest first. Partitions being persisted are left out.
    pub(crate) fn persist_candidates(
        &self,
        max_age: Duration,
        under_pressure: bool,
    ) -> Vec<PartitionKey> {
        let now = Instant::now();
        let tables = self.tables.read();
        let mut aged = Vec::new();
        let mut others = Vec::new();
        for ((db, table), t) in tables.iter() {
            for (&day, p) in &t.partitions {
                if p.persisting_through.is_some() {
                    continue;
                }
                let arrived = p.chunks.iter().map(|c| c.arrived).min().unwrap_or(now);
                let key = PartitionKey {
                    database: Arc::clone(db),
                    table: Arc::clone(table),
                    day,
                };
                if now.duration_since(arrived) >= max_age {
                    aged.push((arrived, key));
                } else if under_pressure {
                    let size: usize = p.chunks.iter().map(|c| c.size_bytes).sum();
                    others.push((size, key));
                }
            }
        }
        aged.sort_by_key(|(arrived, _)| *arrived);
        others.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
        aged.into_iter()
            .map(|(_, k)| k)
            .chain(others.into_iter().map(|(_, k)| k))
            .collect()
    }

    /// Every partition not being persisted (shutdown).
    pub(crate) fn all_partitions(&self) -> Vec<PartitionKey> {
        self.persist_candidates(Duration::ZERO, false)
    }

    /// Deduplicates a partition and marks its head chunk (all rows so far) as being
    /// persisted. Returns `None` if the partition is gone or already being persisted.
    pub(crate) fn begin_persist(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<PersistRows>, ArrowError> {
        let table_key = (Arc::clone(&key.database), Arc::clone(&key.table));
        // Merges the chunks into one deduplicated head (unless a persist is running).
        if self.deduplicated_partition(&table_key, key.day)?.is_none() {
            return Ok(None);
        }
        let mut tables = self.tables.write();
        let Some(p) = tables
            .get_mut(&table_key)
            .and_then(|t| t.partitions.get_mut(&key.day))
        else {
            return Ok(None);
        };
        if p.persisting_through.is_some() {
            return Ok(None);
        }
        let head = &p.chunks[0];
        if !head.deduplicated {
            // Chunks were replaced between the merge and now; try again on the next round.
            return Ok(None);
        }
        p.persisting_through = Some(head.sequence);
        Ok(Some(PersistRows {
            batches: head
                .batches
                .iter()
                .map(|b| conform(b, &p.schema))
                .collect::<Result<_, _>>()?,
            min_sequence: head.min_sequence,
            max_sequence: head.sequence,
            sort_key: Arc::clone(&p.sort_key),
        }))
    }

    /// Drops the persisted head chunk of a partition: its file is recorded in the catalog.
    pub(crate) fn finish_persist(&self, key: &PartitionKey, through: u64) {
        let table_key = (Arc::clone(&key.database), Arc::clone(&key.table));
        let mut tables = self.tables.write();
        let Some(t) = tables.get_mut(&table_key) else {
            return;
        };
        let Some(p) = t.partitions.get_mut(&key.day) else {
            return;
        };
        p.persisting_through = None;
        let persisted = p
            .chunks
            .iter()
            .take_while(|c| c.sequence <= through)
            .count();
        let bytes: usize = p.chunks[..persisted].iter().map(|c| c.size_bytes).sum();
        p.chunks.drain(..persisted);
        self.size_bytes.fetch_sub(bytes, Ordering::Relaxed);
        if p.chunks.is_empty() {
            t.partitions.remove(&key.day);
            if t.partitions.is_empty() {
                tables.remove(&table_key);
            }
        } else {
            p.deduplicated = false;
        }
    }

    /// Gives up a persist: the rows stay buffered and are persisted by a later job.
    pub(crate) fn abort_persist(&self, key: &PartitionKey) {
        let table_key = (Arc::clone(&key.database), Arc::clone(&key.table));
        let mut tables = self.tables.write();
        if let Some(p) = tables
            .get_mut(&table_key)
            .and_then(|t| t.partitions.get_mut(&key.day))
        {
            p.persisting_through = None;
        }
    }

    /// The lowest sequence number of an entry with rows still only in the buffer.
    pub(crate) fn oldest_unpersisted_sequence(&self) -> Option<u64> {
        let tables = self.tables.read();
        tables
            .values()
            .flat_map(|t| t.partitions.values())
            .flat_map(|p| p.chunks.iter().map(|c| c.min_sequence))
            .min()
    }
}

/// A partition of the buffer: (database, table, UTC day).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartitionKey {
    pub(crate) database: Arc<str>,
    pub(crate) table: Arc<str>,
    pub(crate) day: i64,
}

/// A partition's rows handed to a persist job: deduplicated, sorted by (tags, time) across
/// the batches.
#[derive(Debug)]
pub(crate) struct PersistRows {
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) min_sequence: u64,
    pub(crate) max_sequence: u64,
    /// The order of the rows' tags ([`catalog::TableSchema::sort_key`]).
    pub(crate) sort_key: Arc<[Arc<str>]>,
}

/// A partition's deduplicated rows as a query sees them.
#[derive(Debug, Clone)]
pub struct PartitionRows {
    /// UTC day number (days since 1970-01-01).
    pub day: i64,
    /// The highest WAL sequence number whose rows are included: orders these rows against
    /// persisted files of the same partition (higher is newer).
    pub max_sequence: u64,
    /// Sorted by (tags in name order, time) across the batches, one row per key.
    pub batches: Vec<RecordBatch>,
}

/// Bytes of the rows of `batch`. Not `get_array_memory_size`: batches decoded from the WAL
/// share one allocation per entry, which that would count once per column.
fn size_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Splits a batch by UTC day of its `time` column; one slice when all rows share a day.
fn split_by_day(batch: RecordBatch) -> Result<Vec<(i64, RecordBatch)>, ArrowError> {
    let time = batch
        .column_by_name(TIME_COLUMN)
        .ok_or_else(|| ArrowError::SchemaError("batch has no time column".into()))?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| ArrowError::SchemaError("time column is not Timestamp(ns)".into()))?
        .clone();
    let (min, max) = time
        .values()
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    if day_of(min) == day_of(max) {
        return Ok(vec![(day_of(min), batch)]);
    }
    let mut days: Vec<i64> = time.values().iter().map(|&t| day_of(t)).collect();
    days.sort_unstable();
    days.dedup();
    let mut out = Vec::with_capacity(days.len());
    for day in days {
        let mask: arrow::array::BooleanArray = time
            .values()
            .iter()
            .map(|&t| Some(day_of(t) == day))
            .collect();
        out.push((day, filter_record_batch(&batch, &mask)?));
    }
    debug_assert!(out.iter().all(|(_, b)| b.column(0).len() == b.num_rows()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows` rows of 100 hosts from time `offset` on, 100 rows per time.
    fn chunk(offset: i64, rows: i64) -> RecordBatch {
        let hosts: Vec<String> = (0..100).map(|h| format!("host_{h}")).collect();
        let rows: Vec<(&str, i64, Option<f64>, Option<f64>)> = (0..rows)
            .map(|i| {
                (
                    hosts[(i % 100) as usize].as_str(),
                    offset + i / 100,
                    Some(i as f64),
                    None,
                )
            })
            .collect();
        crate::dedup::tests::batch(&rows)
    }

    /// Tags sorted by name.
    fn no_key() -> Arc<[Arc<str>]> {
        Arc::from(Vec::<Arc<str>>::new())
    }

    fn only_schema(buffer: &Buffer) -> SchemaRef {
        let tables = buffer.tables.read();
        let table = tables.values().next().expect("one table");
        Arc::clone(
            &table
                .partitions
                .values()
                .next()
                .expect("one partition")
                .schema,
        )
    }

    fn total_rows(buffer: &Buffer, schema: &SchemaRef) -> usize {
        let batches = buffer.read("db", "t", schema, i64::MIN, i64::MAX).unwrap();
        batches
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| b.num_rows())
            .sum()
    }

    #[test]
    fn a_persisted_head_is_dropped_exactly_while_newer_rows_stay_readable() {
        let buffer = Buffer::default();
        for c in 0..3 {
            buffer
                .apply(c + 1, "db", "t", &no_key(), chunk(c as i64 * 1_000, 1_000))
                .unwrap();
        }
        let schema = only_schema(&buffer);
        let key = buffer.all_partitions().pop().expect("one partition");
        let rows = buffer
            .begin_persist(&key)
            .unwrap()
            .expect("not persisting yet");
        assert_eq!((rows.min_sequence, rows.max_sequence), (1, 3));
        assert_eq!(
            rows.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            3_000
        );
        assert!(
            buffer.begin_persist(&key).unwrap().is_none(),
            "one job per partition"
        );
        assert!(buffer.all_partitions().is_empty());

        // Writes and reads go on while the file is written; reads see old and new rows.
        buffer
            .apply(4, "db", "t", &no_key(), chunk(10_000, 1_000))
            .unwrap();
        assert_eq!(total_rows(&buffer, &schema), 4_000);
        assert_eq!(buffer.oldest_unpersisted_sequence(), Some(1));

        buffer.finish_persist(&key, rows.max_sequence);
        assert_eq!(total_rows(&buffer, &schema), 1_000);
        assert_eq!(buffer.oldest_unpersisted_sequence(), Some(4));
        let again = buffer.begin_persist(&key).unwrap().expect("the newer rows");
        assert_eq!((again.min_sequence, again.max_sequence), (4, 4));
        buffer.finish_persist(&key, again.max_sequence);
        assert_eq!(buffer.oldest_unpersisted_sequence(), None);
        assert_eq!(buffer.size_bytes(), 0);
    }

    #[test]
    fn an_aborted_persist_keeps_the_rows() {
        let buffer = Buffer::default();
        buffer
            .apply(1, "db", "t", &no_key(), chunk(0, 1_000))
            .unwrap();
        let schema = only_schema(&buffer);
        let key = buffer.all_partitions().pop().unwrap();
        buffer.begin_persist(&key).unwrap().unwrap();
        buffer.abort_persist(&key);
        assert_eq!(total_rows(&buffer, &schema), 1_000);
        assert_eq!(buffer.all_partitions(), vec![key]);
    }

    #[test]
    fn deduplicating_a_partition_does_not_grow_its_accounted_size() {
        let buffer = Buffer::default();
        for c in 0..50 {
            buffer
                .apply(c + 1, "db", "t", &no_key(), chunk(c as i64 * 1_000, 5_000))
                .unwrap();
        }
        let before = buffer.size_bytes();
        assert_eq!(total_rows(&buffer, &only_schema(&buffer)), 250_000);
        let after = buffer.size_bytes();
        assert!(
            after <= before + before / 10,
            "before {before}, after {after}"
        );
    }

    #[test]
    fn concurrent_readers_see_the_same_rows_while_writes_continue() {
        let buffer = Arc::new(Buffer::default());
        for c in 0..20 {
            buffer
                .apply(c + 1, "db", "t", &no_key(), chunk(c as i64 * 1_000, 5_000))
                .unwrap();
        }
        let schema = only_schema(&buffer);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (buffer, schema) = (Arc::clone(&buffer), schema.clone());
                scope.spawn(move || {
                    let rows = total_rows(&buffer, &schema);
                    assert!(rows >= 100_000, "{rows}");
                });
            }
            let writer = Arc::clone(&buffer);
            scope.spawn(move || {
                for c in 20..30 {
                    writer
                        .apply(c + 1, "db", "t", &no_key(), chunk(c as i64 * 1_000, 5_000))
                        .unwrap();
                }
            });
        });
        assert_eq!(total_rows(&buffer, &schema), 150_000);
    }
}
