//! Measures group commit: concurrent writers appending TSBS-sized entries with `sync`.
//!
//! ```text
//! cargo run --release -p wal --example append_throughput -- [writers] [appends_per_writer] [rows_per_entry]
//! ```
//!
//! Defaults: 4 writers, 250 appends each, 3,500 rows per entry (10 dictionary tags, 10 f64
//! fields and a timestamp: ~450 KB of Arrow IPC, like a 5,000-line TSBS request body).
//! Segments go to a fresh directory under `$WAL_BENCH_DIR` (default: the system temp dir),
//! removed afterwards.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use prometheus_client::registry::Registry;
use wal::{EncodedEntry, TableBatch, Wal, WalConfig, WalEntry};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are numbers"))
        .collect();
    let writers = args.first().copied().unwrap_or(4);
    let appends_per_writer = args.get(1).copied().unwrap_or(250);
    let rows = args.get(2).copied().unwrap_or(3_500);

    let entry = EncodedEntry::encode(&WalEntry {
        tables: vec![TableBatch {
            database: "benchmark".to_owned(),
            table: "cpu".to_owned(),
            batch: tsbs_cpu_batch(rows),
        }],
    })
    .expect("encodes");

    let base = std::env::var_os("WAL_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("wal-bench-{}", std::process::id()));
    let mut registry = Registry::default();
    let wal = Wal::open(
        WalConfig {
            dir: dir.clone(),
            ..WalConfig::default()
        },
        &mut registry,
        |_, _| Ok(()),
    )
    .expect("opens");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let entry = Arc::new(entry);
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let wal = wal.clone();
                let entry = Arc::clone(&entry);
                tokio::spawn(async move {
                    for _ in 0..appends_per_writer {
                        // A real caller encodes each request; cloning stands in for that copy.
                        wal.append((*entry).clone(), true).await.expect("appends");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    wal.close().expect("closes");
    std::fs::remove_dir_all(&dir).expect("removes the bench directory");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes metrics");
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let appends = metric("tributary_wal_appends_total");
    let fsyncs = metric("tributary_wal_fsyncs_total");
    let fsync_seconds = metric("tributary_wal_fsync_duration_seconds_sum");
    let bytes = metric("tributary_wal_bytes_written_total");
    println!(
        "{writers} writers x {appends_per_writer} appends of {} bytes ({rows} rows), sync=true",
        entry.len_bytes()
    );
    println!(
        "{:.0} appends/s, {:.0} MB/s, {appends} appends, {fsyncs} fsyncs ({:.2} appends per fsync, \
         mean fsync {:.2} ms, {:.0}% of wall time in fsync)",
        appends / elapsed,
        bytes / elapsed / 1e6,
        appends / fsyncs,
        fsync_seconds / fsyncs * 1e3,
        fsync_seconds / elapsed * 100.0
    );
}

/// The TSBS cpu-only shape: 10 dictionary-encoded tags, 10 f64 fields, a timestamp.
fn tsbs_cpu_batch(rows: usize) -> RecordBatch {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for tag in 0..10 {
        fields.push(Field::new(format!("tag{tag}"), dictionary.clone(), true));
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        for row in 0..rows {
            builder.append_value(format!("value-{}", (row * (tag + 1)) % 100));
        }
        columns.push(Arc::new(builder.finish()));
    }
    for field in 0..10 {
        fields.push(Field::new(
            format!("usage_{field}"),
            DataType::Float64,
            true,
        ));
        columns.push(Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|row| (row * 31 + field) as f64 / 7.0),
        )));
    }
    fields.push(Field::new(
        "time",
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        false,
    ));
    columns.push(Arc::new(TimestampNanosecondArray::from_iter_values(
        (0..rows as i64).map(|row| 1_700_000_000_000_000_000 + row * 10_000_000_000),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match")
}
