//! Which partitions to compact, and into how many files.
//!
//! A partition (table, UTC day) of today is compacted into level-1 files when it holds at
//! least `--compaction-l0-threshold` level-0 files. Once its day is over, a partition with
//! files below level 2 and more files than the target size needs is compacted into level-2
//! files: a day that no longer receives writes is merged into as few files as the target
//! size allows, so old data reads as fast as a single file. A single file is left as it is
//! (rewriting it would change nothing a query sees).
//!
//! A partition with a file that holds rows of a range delete not yet applied to it is
//! compacted too: the merge drops those rows, so queries stop filtering them.
//!
//! A compaction takes every file of the partition, whatever its level. That keeps the order
//! between sources exact: queries and replay order a partition's sources by their highest
//! WAL sequence number, and a merged file inherits the highest of its inputs, so merging a
//! subset that skipped a file in between would make the skipped file look older than rows
//! written before it. Files persisted while a compaction runs have higher sequence numbers
//! than all its inputs and stay as they are.

use std::sync::Arc;

use catalog::{CatalogSnapshot, DatabaseSchema, ParquetFile, TableSchema, Tombstone};

/// The level of files compacted while their day still receives writes.
pub(crate) const HOT_LEVEL: u8 = 1;
/// The level of files of a day that is over, compacted to their final size.
pub(crate) const COLD_LEVEL: u8 = 2;

/// One partition's compaction.
#[derive(Debug, Clone)]
pub(crate) struct CompactionPlan {
    pub(crate) database: Arc<DatabaseSchema>,
    pub(crate) table: Arc<TableSchema>,
    pub(crate) day: i64,
    /// Every file of the partition, oldest first.
    pub(crate) inputs: Vec<ParquetFile>,
    /// How many files the output is cut into (by time, so they do not overlap).
    pub(crate) outputs: usize,
    /// The table's range deletes: the merge drops the rows they match.
    pub(crate) deletes: Vec<Tombstone>,
    /// The newest of them (0: none), recorded on the outputs as applied.
    pub(crate) tombstones_applied: i64,
    /// The outputs' level: 1 for today's partitions, 2 for days that are over.
    pub(crate) output_level: u8,
}

impl CompactionPlan {
    pub(crate) fn input_bytes(&self) -> u64 {
        self.inputs.iter().map(|f| f.file.size_bytes).sum()
    }

    pub(crate) fn input_rows(&self) -> u64 {
        self.inputs.iter().map(|f| f.file.row_count).sum()
    }
}

/// What makes a partition worth compacting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanRules {
    pub(crate) l0_threshold: usize,
    pub(crate) target_file_bytes: u64,
    /// Today's UTC day number: earlier days are cold.
    pub(crate) today: i64,
    /// Most files one compaction merges.
    pub(crate) max_inputs: usize,
}

/// The partitions of `snapshot` to compact, the most level-0 files first.
pub(crate) fn plan(snapshot: &CatalogSnapshot, rules: PlanRules) -> Vec<CompactionPlan> {
    let mut plans = Vec::new();
    for database in snapshot.databases.values() {
        for table in database.tables.values() {
            let files = snapshot.table_files(table.id);
            let deletes = snapshot.table_tombstones(table.id);
            let mut days: Vec<i64> = files.iter().map(|f| f.file.partition_day).collect();
            days.sort_unstable();
            days.dedup();
            for day in days {
                // Oldest first (the catalog lists files by sequence number).
                let inputs: Vec<ParquetFile> = files
                    .iter()
                    .filter(|f| f.file.partition_day == day)
                    .take(rules.max_inputs.max(2))
                    .cloned()
                    .collect();
                let level0 = inputs.iter().filter(|f| f.file.level == 0).count();
                let bytes: u64 = inputs.iter().map(|f| f.file.size_bytes).sum();
                let outputs = bytes.div_ceil(rules.target_file_bytes.max(1)).max(1) as usize;
                let is_cold = day < rules.today;
                let many = level0 >= rules.l0_threshold.max(2);
                let cold = is_cold
                    && inputs.iter().any(|f| f.file.level < COLD_LEVEL)
                    && inputs.len() > outputs;
                let deleted_rows = inputs
                    .iter()
                    .any(|f| deletes.iter().any(|t| t.is_pending_for(&f.file)));
                if many || cold || deleted_rows {
                    plans.push(CompactionPlan {
                        database: Arc::clone(database),
                        table: Arc::clone(table),
                        day,
                        inputs,
                        outputs,
                        deletes: deletes.to_vec(),
                        tombstones_applied: snapshot.newest_tombstone(table.id),
                        output_level: if is_cold { COLD_LEVEL } else { HOT_LEVEL },
                    });
                }
            }
        }
    }
    plans.sort_by_key(|p| std::cmp::Reverse(p.inputs.iter().filter(|f| f.file.level == 0).count()));
    plans
}

/// `[min, max]` cut into `parts` adjacent, non-overlapping inclusive ranges covering it.
pub(crate) fn time_slices(min: i64, max: i64, parts: usize) -> Vec<(i64, i64)> {
    let parts = parts.max(1) as i128;
    let (lo, hi) = (min as i128, max as i128);
    let width = (hi - lo + 1).max(1);
    let parts = parts.min(width);
    (0..parts)
        .map(|i| {
            let start = lo + width * i / parts;
            let end = lo + width * (i + 1) / parts - 1;
            (start as i64, end as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use catalog::{DatabaseId, NewParquetFile, ParquetFileId, TableId};
    use std::collections::BTreeMap;

    fn snapshot(files: &[(i64, u8, u64)]) -> CatalogSnapshot {
        let table = TableSchema {
            id: TableId(1),
            name: "cpu".into(),
            columns: BTreeMap::new(),
            sort_key: Arc::from(Vec::new()),
            retention_period_ns: None,
        };
        let database = DatabaseSchema {
            id: DatabaseId(1),
            name: "db".into(),
            tables: BTreeMap::from([(Arc::from("cpu"), Arc::new(table))]),
            retention_period_ns: None,
        };
        let files: Vec<ParquetFile> = files
            .iter()
            .enumerate()
            .map(|(i, &(day, level, size))| ParquetFile {
                id: ParquetFileId(i as i64),
                file: NewParquetFile {
                    table_id: TableId(1),
                    partition_day: day,
                    path: format!("db/cpu/{day}/{i}.parquet"),
                    size_bytes: size,
                    row_count: 10,
                    min_time_ns: 0,
                    max_time_ns: 10,
                    level,
                    min_sequence: i as u64,
                    max_sequence: i as u64,
                    tombstones_applied: 0,
                },
            })
            .collect();
        CatalogSnapshot {
            databases: BTreeMap::from([(Arc::from("db"), Arc::new(database))]),
            parquet_files: BTreeMap::from([(TableId(1), files.into())]),
            ..CatalogSnapshot::default()
        }
    }

    const RULES: PlanRules = PlanRules {
        l0_threshold: 3,
        target_file_bytes: 100,
        today: 10,
        max_inputs: 100,
    };

    #[test]
    fn a_partition_of_today_waits_for_the_level0_threshold() {
        assert!(plan(&snapshot(&[(10, 0, 1), (10, 0, 1)]), RULES).is_empty());
        let plans = plan(
            &snapshot(&[(10, 1, 50), (10, 0, 1), (10, 0, 1), (10, 0, 1)]),
            RULES,
        );
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].output_level, HOT_LEVEL);
        assert_eq!(
            plans[0].inputs.len(),
            4,
            "every file of the partition, level 1 too"
        );
        assert_eq!(plans[0].outputs, 1);
    }

    #[test]
    fn a_past_day_with_new_files_is_merged_down_to_its_target_size() {
        let plans = plan(
            &snapshot(&[(9, 0, 30), (9, 0, 30), (9, 0, 60), (10, 0, 1)]),
            RULES,
        );
        assert_eq!(plans.len(), 1);
        assert_eq!((plans[0].day, plans[0].outputs), (9, 2));
        assert_eq!(plans[0].output_level, COLD_LEVEL);
        // Files compacted while the day was today, more than the size needs: merged, to level 2.
        let plans = plan(&snapshot(&[(9, 1, 30), (9, 1, 30)]), RULES);
        assert_eq!((plans[0].outputs, plans[0].output_level), (1, COLD_LEVEL));
        // Already as few files as the target size allows: left alone.
        assert!(plan(&snapshot(&[(9, 0, 150)]), RULES).is_empty());
        assert!(plan(&snapshot(&[(9, 1, 90), (9, 1, 90)]), RULES).is_empty());
        assert!(plan(&snapshot(&[(9, 2, 90), (9, 2, 90)]), RULES).is_empty());
        // A late write to it: merged with the level-2 files, into level 2.
        let plans = plan(&snapshot(&[(9, 2, 90), (9, 0, 1)]), RULES);
        assert_eq!(
            (plans[0].inputs.len(), plans[0].output_level),
            (2, COLD_LEVEL)
        );
    }

    #[test]
    fn a_compaction_takes_the_oldest_files_up_to_its_fan_in() {
        let files: Vec<(i64, u8, u64)> = (0..7).map(|_| (10, 0, 1)).collect();
        let plans = plan(
            &snapshot(&files),
            PlanRules {
                max_inputs: 4,
                ..RULES
            },
        );
        let sequences: Vec<u64> = plans[0]
            .inputs
            .iter()
            .map(|f| f.file.max_sequence)
            .collect();
        assert_eq!(sequences, [0, 1, 2, 3]);
    }

    #[test]
    fn a_file_with_rows_of_a_range_delete_is_rewritten_once() {
        let mut snap = snapshot(&[(10, 1, 50)]);
        assert!(plan(&snap, RULES).is_empty());
        let tombstone = Tombstone {
            id: catalog::TombstoneId(4),
            table_id: TableId(1),
            delete: catalog::NewTombstone {
                min_time_ns: 5,
                max_time_ns: 50,
                tags: vec![],
                wal_cutoff: 0,
            },
        };
        snap.tombstones.insert(TableId(1), vec![tombstone].into());
        let plans = plan(&snap, RULES);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].tombstones_applied, 4);
        assert_eq!(plans[0].deletes.len(), 1);

        let mut files = snap.table_files(TableId(1)).to_vec();
        files[0].file.tombstones_applied = 4;
        snap.parquet_files.insert(TableId(1), files.into());
        assert!(plan(&snap, RULES).is_empty());
    }

    #[test]
    fn time_slices_cover_the_range_without_overlap() {
        assert_eq!(time_slices(0, 9, 1), [(0, 9)]);
        assert_eq!(time_slices(0, 9, 3), [(0, 2), (3, 5), (6, 9)]);
        assert_eq!(time_slices(5, 5, 4), [(5, 5)]);
        let slices = time_slices(i64::MIN, i64::MAX, 2);
        assert_eq!(slices[0].0, i64::MIN);
        assert_eq!(slices[1].1, i64::MAX);
        assert_eq!(slices[0].1 + 1, slices[1].0);
    }
}
