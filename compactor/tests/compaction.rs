//! The compactor against a real catalog and an in-memory object store: what comes out of a
//! compaction, and what garbage collection deletes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringDictionaryBuilder,
    TimestampNanosecondArray,
};
use arrow::datatypes::{Float64Type, Int32Type, TimestampNanosecondType};
use bytes::Bytes;
use catalog::{Catalog, CatalogLimits, ColumnType, NewParquetFile, SchemaChanges, SqliteCatalog};
use compactor::{Compactor, CompactorConfig};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet_file::{ObjectStorage, encode_partition};
use prometheus_client::registry::Registry;

/// 2016-01-01 as a UTC day number.
const DAY: i64 = 16_801;
const DAY_NS: i64 = DAY * 86_400 * 1_000_000_000;

struct Fixture {
    catalog: Arc<SqliteCatalog>,
    store: Arc<dyn ObjectStore>,
    compactor: Compactor,
    table: Arc<catalog::TableSchema>,
}

async fn fixture(config: CompactorConfig) -> Fixture {
    let catalog = Arc::new(SqliteCatalog::open_in_memory(CatalogLimits::default()).unwrap());
    let mut changes = SchemaChanges::new("db");
    changes.tables.insert(
        "cpu".into(),
        BTreeMap::from([
            ("host".into(), ColumnType::Tag),
            ("a".into(), ColumnType::Float),
            ("b".into(), ColumnType::Float),
        ]),
    );
    let snapshot = catalog.apply(changes).await.unwrap();
    let table = Arc::clone(snapshot.database("db").unwrap().table("cpu").unwrap());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let compactor = Compactor::new(
        config,
        Arc::clone(&catalog) as Arc<dyn Catalog>,
        ObjectStorage::remote(Arc::clone(&store)),
        &mut Registry::default(),
    )
    .unwrap();
    Fixture {
        catalog,
        store,
        compactor,
        table,
    }
}

/// Rows (host, time offset in the day, a, b), sorted by (host, time), in the table's schema.
fn batch(
    table: &catalog::TableSchema,
    rows: &[(&str, i64, Option<f64>, Option<f64>)],
) -> RecordBatch {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| (r.0, r.1));
    let mut host = StringDictionaryBuilder::<Int32Type>::new();
    rows.iter().for_each(|r| host.append_value(r.0));
    // Columns in name order: a, b, host, time.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.3).collect::<Float64Array>()),
        Arc::new(host.finish()),
        Arc::new(TimestampNanosecondArray::from_iter_values(
            rows.iter().map(|r| DAY_NS + r.1),
        )),
    ];
    RecordBatch::try_new(table.arrow_schema(), columns).unwrap()
}

impl Fixture {
    /// Records a level-0 file of `rows` holding WAL sequence `sequence`.
    async fn persist(&self, sequence: u64, rows: &[(&str, i64, Option<f64>, Option<f64>)]) {
        let batch = batch(&self.table, rows);
        let bytes = encode_partition(std::slice::from_ref(&batch), &self.table.sort_key).unwrap();
        let path = parquet_file::object_path("db", "cpu", DAY);
        let size_bytes = bytes.len() as u64;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .unwrap();
        let time = batch.column(3).as_primitive::<TimestampNanosecondType>();
        self.catalog
            .add_parquet_files(vec![NewParquetFile {
                table_id: self.table.id,
                partition_day: DAY,
                path: path.to_string(),
                size_bytes,
                row_count: batch.num_rows() as u64,
                min_time_ns: arrow::compute::min(time).unwrap(),
                max_time_ns: arrow::compute::max(time).unwrap(),
                level: 0,
                min_sequence: sequence,
                max_sequence: sequence,
                tombstones_applied: 0,
            }])
            .await
            .unwrap();
    }

    /// Every row of every recorded file as (host, time offset, a, b), sorted.
    async fn rows(&self) -> Vec<(String, i64, Option<f64>, Option<f64>)> {
        let mut rows = Vec::new();
        for file in self.catalog.snapshot().table_files(self.table.id) {
            let bytes: Bytes = self
                .store
                .get(&Path::parse(&file.file.path).unwrap())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let a = batch
                    .column_by_name("a")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                let b = batch
                    .column_by_name("b")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                let host = batch.column_by_name("host").unwrap();
                let host = arrow::compute::cast(host, &arrow::datatypes::DataType::Utf8).unwrap();
                let host = host.as_string::<i32>();
                let time = batch
                    .column_by_name("time")
                    .unwrap()
                    .as_primitive::<TimestampNanosecondType>();
                for i in 0..batch.num_rows() {
                    rows.push((
                        host.value(i).to_owned(),
                        time.value(i) - DAY_NS,
                        a.is_valid(i).then(|| a.value(i)),
                        b.is_valid(i).then(|| b.value(i)),
                    ));
                }
            }
        }
        rows.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        rows
    }

    async fn objects(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        paths.sort();
        paths
    }
}

fn config() -> CompactorConfig {
    CompactorConfig {
        l0_threshold: 3,
        gc_grace_period: Duration::ZERO,
        ..CompactorConfig::default()
    }
}

#[tokio::test]
async fn many_level0_files_of_a_past_day_become_one_level2_file_with_the_newest_fields_of_each_row()
{
    let f = fixture(config()).await;
    f.persist(
        1,
        &[("a", 10, Some(1.0), Some(1.0)), ("b", 10, Some(2.0), None)],
    )
    .await;
    // Later writes of the same rows: `a` names only field a, `b` only field b.
    f.persist(
        2,
        &[("a", 10, Some(10.0), None), ("c", 5, Some(3.0), Some(3.0))],
    )
    .await;
    f.persist(
        3,
        &[("b", 10, None, Some(20.0)), ("a", 20, Some(4.0), None)],
    )
    .await;
    let before_rows = vec![
        ("a".to_owned(), 10, Some(10.0), Some(1.0)),
        ("a".to_owned(), 20, Some(4.0), None),
        ("b".to_owned(), 10, Some(2.0), Some(20.0)),
        ("c".to_owned(), 5, Some(3.0), Some(3.0)),
    ];

    let reports = f.compactor.compact_all().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].files_in, reports[0].files_out), (3, 1));
    assert_eq!((reports[0].rows_in, reports[0].rows_out), (6, 4));

    let snapshot = f.catalog.snapshot();
    let files = snapshot.table_files(f.table.id);
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0].file.level, 2,
        "a day that is over is compacted to level 2"
    );
    assert_eq!(
        (files[0].file.min_sequence, files[0].file.max_sequence),
        (1, 3)
    );
    assert_eq!(
        (files[0].file.min_time_ns, files[0].file.max_time_ns),
        (DAY_NS + 5, DAY_NS + 20)
    );
    assert_eq!(f.rows().await, before_rows);

    // Recorded for `system.compaction_events`.
    let events = f.catalog.compaction_events().await.unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e.table_id, e.partition_day), (f.table.id, DAY));
    assert_eq!(
        (e.files_in, e.files_out, e.rows_in, e.rows_out),
        (3, 1, 6, 4)
    );
    assert!(e.error.is_none());

    // Nothing left to do until new files come.
    assert!(f.compactor.compact_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_compaction_drops_range_deleted_rows_of_older_files_and_keeps_later_writes() {
    let f = fixture(config()).await;
    f.persist(
        1,
        &[("a", 10, Some(1.0), Some(1.0)), ("b", 10, Some(2.0), None)],
    )
    .await;
    f.persist(2, &[("a", 12, Some(5.0), None)]).await;
    let delete = catalog::NewTombstone {
        min_time_ns: DAY_NS,
        max_time_ns: DAY_NS + 15,
        tags: vec![("host".into(), "a".into())],
        wal_cutoff: 2,
    };
    let tombstone = f.catalog.add_tombstone("db", "cpu", delete).await.unwrap();
    // Written after the delete: kept, and the deleted row lends it no fields.
    f.persist(3, &[("a", 10, None, Some(7.0))]).await;

    let reports = f.compactor.compact_all().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        f.rows().await,
        vec![
            ("a".to_owned(), 10, None, Some(7.0)),
            ("b".to_owned(), 10, Some(2.0), None),
        ]
    );
    let snapshot = f.catalog.snapshot();
    let files = snapshot.table_files(f.table.id);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file.tombstones_applied, tombstone.id.0);
    assert!(!tombstone.is_pending_for(&files[0].file));
    // Applied: the partition is not compacted again for it.
    assert!(f.compactor.compact_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_collection_deletes_replaced_and_unrecorded_objects_but_not_live_ones() {
    let f = fixture(config()).await;
    for sequence in 1..=3 {
        f.persist(sequence, &[("a", sequence as i64, Some(1.0), None)])
            .await;
    }
    let crashed_upload = Path::from("db/cpu/2016-01-01/never-recorded.parquet");
    f.store
        .put(&crashed_upload, PutPayload::from_static(b"PAR1"))
        .await
        .unwrap();
    let foreign = Path::from("not-ours.txt");
    f.store
        .put(&foreign, PutPayload::from_static(b"x"))
        .await
        .unwrap();
    f.compactor.compact_all().await.unwrap();
    assert_eq!(f.objects().await.len(), 3 + 1 + 1 + 1);

    let deleted = f.compactor.collect_garbage().await.unwrap();
    assert_eq!(deleted, 3 + 1, "the three inputs and the crashed upload");
    let live = f.catalog.snapshot().table_files(f.table.id)[0]
        .file
        .path
        .clone();
    assert_eq!(f.objects().await, [live, foreign.to_string()]);
    assert!(
        f.catalog
            .deleted_objects(i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn objects_stay_through_the_grace_period() {
    let f = fixture(CompactorConfig {
        gc_grace_period: Duration::from_secs(3600),
        ..config()
    })
    .await;
    for sequence in 1..=3 {
        f.persist(sequence, &[("a", sequence as i64, Some(1.0), None)])
            .await;
    }
    f.compactor.compact_all().await.unwrap();
    assert_eq!(f.compactor.collect_garbage().await.unwrap(), 0);
    assert_eq!(
        f.objects().await.len(),
        4,
        "inputs kept for running queries"
    );
    assert_eq!(f.catalog.deleted_objects(i64::MAX).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_large_partition_is_cut_by_time_into_files_that_do_not_overlap() {
    let f = fixture(CompactorConfig {
        target_file_bytes: 1,
        ..config()
    })
    .await;
    for sequence in 1..=3u64 {
        let rows: Vec<(&str, i64, Option<f64>, Option<f64>)> = (0..100)
            .map(|i| ("a", i * 1_000 + sequence as i64, Some(i as f64), None))
            .collect();
        f.persist(sequence, &rows).await;
    }
    let before = f.rows().await;
    let reports = f.compactor.compact_all().await.unwrap();
    assert!(reports[0].files_out > 1, "{reports:?}");
    let snapshot = f.catalog.snapshot();
    let mut ranges: Vec<(i64, i64)> = snapshot
        .table_files(f.table.id)
        .iter()
        .map(|f| (f.file.min_time_ns, f.file.max_time_ns))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(pair[0].1 < pair[1].0, "{ranges:?}");
    }
    assert_eq!(f.rows().await, before);
}
