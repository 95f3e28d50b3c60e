//! Tributary's Parquet files: how they are laid out, where they are stored, and the object
//! storage they live in. The ingester writes them from its buffer, the compactor rewrites them
//! merged, the querier reads them.
//!
//! - [`encode_partition`] and [`PartitionWriter`]: one partition's rows, sorted by the table's
//!   sort key, as a Parquet file (zstd, dictionary-encoded tags with bloom filters, statistics,
//!   page index, `sorting_columns`).
//! - [`object_path`] gives `<db>/<table>/<YYYY-MM-DD>/<uuid>.parquet`.
//! - [`ObjectStorage`]: the object store, with durable uploads on the local file system and
//!   an in-memory cache of files (or of the blocks read from large ones) for readers.

mod cache;
mod layout;
mod storage;

pub use layout::{PartitionWriter, encode_partition, key_column_indices};
pub use storage::{ObjectStorage, StorageError, object_path};
