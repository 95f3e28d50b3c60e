//! The in-memory buffer: acknowledged rows per (database, table, partition = UTC day).
//!
//! Chunks are appended in sequence-number order (the ingester applies entries in WAL order), so
//! a partition's chunks are in write order. A read deduplicates a partition's chunks and puts
//! the result back as one chunk, so repeated queries do not redo the work and memory holds one
//! copy of each row.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::error::ArrowError;
use parking_lot::{Mutex, RwLock};

use crate::dedup::dedup_sorted;
use crate::schema::{TIME_COLUMN, conform, merge_schemas};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

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
}

#[derive(Debug, Clone)]
struct Chunk {
    sequence: u64,
    batch: RecordBatch,
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
        batch: RecordBatch,
    ) -> Result<(), ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let by_day = split_by_day(batch)?;
        let mut tables = self.tables.write();
        let key = (Arc::<str>::from(database), Arc::<str>::from(table));
        let table_buffer = tables.entry(key).or_default();
        for (day, batch) in by_day {
            let size_bytes = size_bytes(&batch);
            self.size_bytes.fetch_add(size_bytes, Ordering::Relaxed);
            let chunk = Chunk {
                sequence,
                batch,
                size_bytes,
                deduplicated: false,
            };
            match table_buffer.partitions.get_mut(&day) {
                Some(p) => {
                    p.schema = merge_schemas(&p.schema, &chunk.batch.schema());
                    p.chunks.push(chunk);
                    p.deduplicated = false;
                }
                None => {
                    let schema = chunk.batch.schema();
                    let deduplicated = false;
                    table_buffer.partitions.insert(
                        day,
                        PartitionBuffer {
                            chunks: vec![chunk],
                            schema,
                            deduplicated,
                            dedup_lock: Arc::default(),
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
            let bytes: usize = table
                .partitions
                .values()
                .flat_map(|p| &p.chunks)
                .map(|c| c.size_bytes)
                .sum();
            self.size_bytes.fetch_sub(bytes, Ordering::Relaxed);
            false
        });
    }

    /// The deduplicated rows of a table whose partitions may hold rows in
    /// `[min_time_ns, max_time_ns]`, each batch conformed to `schema`.
    pub(crate) fn read(
        &self,
        database: &str,
        table: &str,
        schema: &SchemaRef,
        min_time_ns: i64,
        max_time_ns: i64,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
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
            if let Some(batch) = self.deduplicated_partition(&key, day)? {
                out.push(conform(&batch, schema)?);
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
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let dedup_lock = {
            let tables = self.tables.read();
            let Some(p) = tables.get(key).and_then(|t| t.partitions.get(&day)) else {
                return Ok(None);
            };
            if p.deduplicated {
                return Ok(Some(p.chunks[0].batch.clone()));
            }
            Arc::clone(&p.dedup_lock)
        };
        let _dedup = dedup_lock.lock();
        // Look again: the reader we waited for may have done the work.
        let (chunks, schema) = {
            let tables = self.tables.read();
            let Some(p) = tables.get(key).and_then(|t| t.partitions.get(&day)) else {
                return Ok(None);
            };
            if p.deduplicated {
                return Ok(Some(p.chunks[0].batch.clone()));
            }
            (p.chunks.clone(), Arc::clone(&p.schema))
        };
        let conformed = chunks
            .iter()
            .map(|c| conform(&c.batch, &schema))
            .collect::<Result<Vec<_>, _>>()?;
        let merged = dedup_sorted(&schema, &conformed, chunks[0].deduplicated)?;
        let merged_sequence = chunks.last().expect("partitions are never empty").sequence;
        let merged_size = size_bytes(&merged);

        let mut tables = self.tables.write();
        if let Some(p) = tables.get_mut(key).and_then(|t| t.partitions.get_mut(&day)) {
            let unchanged_prefix = p.chunks.len() >= chunks.len()
                && p.chunks[chunks.len() - 1].sequence == merged_sequence
                && p.chunks[0].sequence == chunks[0].sequence;
            if unchanged_prefix {
                let old: usize = p.chunks[..chunks.len()].iter().map(|c| c.size_bytes).sum();
                p.chunks.splice(
                    ..chunks.len(),
                    [Chunk {
                        sequence: merged_sequence,
                        batch: merged.clone(),
                        size_bytes: merged_size,
                        deduplicated: true,
                    }],
                );
                p.deduplicated = p.chunks.len() == 1;
                self.size_bytes.fetch_add(merged_size, Ordering::Relaxed);
                self.size_bytes.fetch_sub(old, Ordering::Relaxed);
            }
        }
        Ok(Some(merged))
    }
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
        batches.iter().map(|b| b.num_rows()).sum()
    }

    #[test]
    fn deduplicating_a_partition_does_not_grow_its_accounted_size() {
        let buffer = Buffer::default();
        for c in 0..50 {
            buffer
                .apply(c + 1, "db", "t", chunk(c as i64 * 1_000, 5_000))
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
                .apply(c + 1, "db", "t", chunk(c as i64 * 1_000, 5_000))
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
                        .apply(c + 1, "db", "t", chunk(c as i64 * 1_000, 5_000))
                        .unwrap();
                }
            });
        });
        assert_eq!(total_rows(&buffer, &schema), 150_000);
    }
}
