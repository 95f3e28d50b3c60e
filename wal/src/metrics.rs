//! The WAL's metrics, registered on the registry passed to [`crate::Wal::open`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub(crate) struct WalMetrics {
    pub(crate) appends: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) fsync_duration_seconds: Histogram,
    pub(crate) bytes_written: Counter,
    pub(crate) segments: Gauge,
}

impl WalMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            appends: Counter::default(),
            fsyncs: Counter::default(),
            // 50 µs doubling to ~0.8 s.
            fsync_duration_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 15)),
            bytes_written: Counter::default(),
            segments: Gauge::default(),
        };
        // Counters get their `_total` suffix from prometheus-client.
        registry.register(
            "tributary_wal_appends",
            "Entries appended to the write-ahead log",
            metrics.appends.clone(),
        );
        registry.register(
            "tributary_wal_fsyncs",
            "fdatasync calls on WAL segments (one per group-commit batch that asked for sync, plus rotations)",
            metrics.fsyncs.clone(),
        );
        registry.register(
            "tributary_wal_fsync_duration_seconds",
            "Time spent in fdatasync on WAL segments",
            metrics.fsync_duration_seconds.clone(),
        );
        registry.register(
            "tributary_wal_bytes_written",
            "Bytes written to WAL segments, entry framing included",
            metrics.bytes_written.clone(),
        );
        registry.register(
            "tributary_wal_segments",
            "WAL segment files on disk",
            metrics.segments.clone(),
        );
        metrics
    }

    pub(crate) fn set_segments(&self, count: usize) {
        self.segments.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
