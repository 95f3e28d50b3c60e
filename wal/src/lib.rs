//! Write-ahead log of Arrow IPC entries.
//!
//! Every write request becomes one [`WalEntry`] (one Arrow [`RecordBatch`](arrow_array::RecordBatch) per table it
//! touches). The ingester encodes it on its own thread ([`EncodedEntry::encode`]), appends it
//! with [`Wal::append`], and acknowledges the client once the returned future resolves. On
//! start, [`Wal::open`] replays every entry so the in-memory buffer can be rebuilt; once the
//! buffer's rows are persisted to Parquet, [`Wal::truncate_through`] drops the segments that
//! hold only persisted entries.
//!
//! ```text
//! EncodedEntry::encode (caller's thread, CPU)
//!        |
//! append --> bounded queue --> writer thread --(one write + one fsync per batch)--> segments
//! replay(on_entry) <---------------------------------------------------------------'
//! truncate_through(seq) drops persisted segments
//! ```
//!
//! # Group commit
//!
//! One dedicated writer thread blocks for a request, then takes every other request already
//! queued, gives them consecutive sequence numbers, writes them with one vectored write and,
//! if any of them asked for `sync`, calls `fdatasync` once for the whole batch before
//! answering all of them. A lone writer pays one fsync per append; N concurrent writers share
//! them. There is no timer: a batch is whatever queued up while the previous fsync ran.
//!
//! # Invariants
//!
//! - An append with `sync = true` resolves only after its entry, and every entry before it,
//!   is on disk (`fdatasync`). With `sync = false` it resolves once the bytes are handed to
//!   the OS.
//! - Sequence numbers start at 1 and strictly increase, across segments and restarts: new
//!   appends continue after the highest replayed entry, and the open segment (whose file
//!   name records the next number) is never deleted.
//! - A write or fsync failure poisons the log: the batch and every later append fail with
//!   [`Error::Poisoned`], because after a failed fsync the kernel may have dropped the dirty
//!   pages and a retry could report success for lost data.
//! - Replay never panics on file bytes: a torn or corrupt tail of the last segment is cut
//!   off with a warning (that is what a crash mid-write leaves behind); corruption anywhere
//!   else fails [`Wal::open`] with an error naming the segment and offset.
//!
//! # On-disk format
//!
//! The directory holds segment files named `{first_sequence_number:020}.wal`, e.g.
//! `00000000000000000001.wal`. A segment is named after the first sequence number it may
//! hold, so every entry in it is `>=` its name and `<` the next segment's name. The writer
//! rotates to a new segment once the open one passes `segment_size_bytes`: it fsyncs the
//! old segment, creates the next one and fsyncs the directory.
//!
//! ```text
//! segment := magic entry*
//! magic   := b"TRBWAL01"                               (8 bytes: format name + version)
//! entry   := payload_len: u32 LE
//!            crc: u32 LE        CRC-32 (IEEE, crc32fast) over the 8 seq bytes then the payload
//!            seq: u64 LE
//!            payload: [u8; payload_len]
//! payload := table_count: u32 LE, table*
//! table   := database_len: u16 LE, database: UTF-8
//!            table_len: u16 LE, table: UTF-8
//!            ipc_len: u32 LE, ipc: Arrow IPC stream (schema, dictionaries, exactly one
//!                                   record batch, end-of-stream; no compression)
//! ```
//!
//! Lengths are checked against the bytes that remain before anything is allocated, so a
//! corrupt length is reported as corruption rather than attempted.

mod entry;
mod metrics;
mod replay;
mod segment;
mod wal;
mod writer;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use entry::{DecodeError, EncodedEntry, TableBatch, WalEntry};
pub use segment::Corruption;
pub use wal::{DEFAULT_DIR, DEFAULT_QUEUE_CAPACITY, DEFAULT_SEGMENT_SIZE_BYTES, Wal, WalConfig};

/// Position of an entry in the log. Starts at 1 and strictly increases, across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber(pub u64);

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the replay callback of [`Wal::open`] returns to stop start-up.
pub type ReplayError = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create WAL directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot list WAL directory {path}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot fsync WAL directory {path}")]
    SyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot read WAL segment {path}")]
    ReadSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "WAL segment {path} is corrupt at byte {offset}; only the last segment is repaired \
         automatically: move this one out of the WAL directory to start without its entries"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        #[source]
        source: Corruption,
    },

    #[error("cannot cut the torn tail off WAL segment {path} at byte {offset}")]
    RepairSegment {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },

    #[error("cannot open WAL segment {path} for appending")]
    OpenSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot create WAL segment {path}")]
    CreateSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot delete WAL segment {path}")]
    DeleteSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Shared by every append of the failed batch, hence the `Arc`.
    #[error("cannot write entries {first_seq}..={last_seq} to WAL segment {path}")]
    Write {
        path: PathBuf,
        first_seq: SequenceNumber,
        last_seq: SequenceNumber,
        #[source]
        source: Arc<io::Error>,
    },

    /// Shared by every append of the failed batch, hence the `Arc`.
    #[error("cannot fsync WAL segment {path}")]
    Fsync {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    #[error("the replay callback rejected WAL entry {seq}")]
    Replay {
        seq: SequenceNumber,
        #[source]
        source: ReplayError,
    },

    #[error("cannot encode table `{database}`.`{table}` as Arrow IPC")]
    Encode {
        database: String,
        table: String,
        #[source]
        source: arrow_schema::ArrowError,
    },

    #[error("{what} is {len_bytes} bytes, over the 65535-byte limit of a WAL entry")]
    NameTooLong {
        what: &'static str,
        len_bytes: usize,
    },

    #[error(
        "entry is {size_bytes} bytes, over the 4 GiB limit of a WAL entry; send smaller requests"
    )]
    EntryTooLarge { size_bytes: u64 },

    #[error("cannot start the WAL writer thread")]
    SpawnWriter {
        #[source]
        source: io::Error,
    },

    #[error("the write-ahead log is closed; the server is shutting down")]
    Closed,

    #[error("the write-ahead log failed to sync earlier and refuses writes; restart the server")]
    Poisoned,

    #[error("the WAL writer thread stopped unexpectedly; restart the server")]
    WriterStopped,
}

/// Renders an error with its whole `source` chain, for log lines.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
