//! What an entry holds and its payload encoding (see the crate doc for the byte layout).
//!
//! Encoding is CPU work done by the caller before [`crate::Wal::append`], so the writer
//! thread only does I/O. The payload's CRC is computed here too and later combined with the
//! sequence number's CRC, which costs the writer O(log n) instead of a pass over the bytes.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

use crate::{Error, Result};

/// One table's rows in an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TableBatch {
    pub database: String,
    pub table: String,
    pub batch: RecordBatch,
}

/// One write request = one entry (may touch several tables).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WalEntry {
    pub tables: Vec<TableBatch>,
}

/// An entry encoded to bytes, ready to append.
///
/// Encoding is CPU work: do it on the request's own (blocking) thread before
/// [`crate::Wal::append`], so the writer thread only does I/O.
#[derive(Clone)]
pub struct EncodedEntry {
    payload: Vec<u8>,
    /// CRC-32 of `payload` alone.
    payload_crc: u32,
}

/// Bytes a table needs in the payload besides its names and IPC stream.
const TABLE_OVERHEAD_BYTES: usize = 2 + 2 + 4;
/// Upper bound for pre-allocating the payload, so a sliced batch that reports a huge
/// backing buffer does not reserve it.
const MAX_CAPACITY_HINT_BYTES: usize = 64 * 1024 * 1024;

impl EncodedEntry {
    pub fn encode(entry: &WalEntry) -> Result<Self> {
        let hint = entry
            .tables
            .iter()
            .map(|t| {
                t.batch.get_array_memory_size()
                    + t.database.len()
                    + t.table.len()
                    + TABLE_OVERHEAD_BYTES
                    + 1024
            })
            .sum::<usize>()
            .min(MAX_CAPACITY_HINT_BYTES);
        let mut payload = Vec::with_capacity(4 + hint);

        let table_count = u32::try_from(entry.tables.len()).map_err(|_| Error::EntryTooLarge {
            size_bytes: u64::MAX,
        })?;
        payload.extend_from_slice(&table_count.to_le_bytes());
        for table in &entry.tables {
            put_name(&mut payload, "database name", &table.database)?;
            put_name(&mut payload, "table name", &table.table)?;

            let len_at = payload.len();
            payload.extend_from_slice(&[0; 4]);
            let encode_error = |source| Error::Encode {
                database: table.database.clone(),
                table: table.table.clone(),
                source,
            };
            let mut writer =
                StreamWriter::try_new(&mut payload, &table.batch.schema()).map_err(encode_error)?;
            writer.write(&table.batch).map_err(encode_error)?;
            writer.finish().map_err(encode_error)?;
            drop(writer);

            let ipc_len = payload.len() - len_at - 4;
            let ipc_len = u32::try_from(ipc_len).map_err(|_| Error::EntryTooLarge {
                size_bytes: payload.len() as u64,
            })?;
            payload[len_at..len_at + 4].copy_from_slice(&ipc_len.to_le_bytes());
        }
        if u32::try_from(payload.len()).is_err() {
            return Err(Error::EntryTooLarge {
                size_bytes: payload.len() as u64,
            });
        }

        let payload_crc = crc32fast::hash(&payload);
        Ok(Self {
            payload,
            payload_crc,
        })
    }

    /// Bytes this entry takes in a segment, its 16-byte frame header included.
    pub fn len_bytes(&self) -> usize {
        crate::segment::FRAME_HEADER_LEN + self.payload.len()
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub(crate) fn payload_crc(&self) -> u32 {
        self.payload_crc
    }
}

impl fmt::Debug for EncodedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedEntry")
            .field("payload_len", &self.payload.len())
            .field("payload_crc", &format_args!("{:#010x}", self.payload_crc))
            .finish()
    }
}

fn put_name(payload: &mut Vec<u8>, what: &'static str, name: &str) -> Result<()> {
    let len = u16::try_from(name.len()).map_err(|_| Error::NameTooLong {
        what,
        len_bytes: name.len(),
    })?;
    payload.extend_from_slice(&len.to_le_bytes());
    payload.extend_from_slice(name.as_bytes());
    Ok(())
}

/// Why a payload whose checksum matched still cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends at byte {offset} while reading {what} ({needed} bytes needed)")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },

    #[error("{what} at payload byte {offset} is not valid UTF-8")]
    Utf8 { what: &'static str, offset: usize },

    #[error("cannot decode the Arrow IPC stream of table `{database}`.`{table}`")]
    Ipc {
        database: String,
        table: String,
        #[source]
        source: ArrowError,
    },

    #[error("the Arrow IPC decoder panicked on table `{database}`.`{table}`: {message}")]
    IpcPanic {
        database: String,
        table: String,
        message: String,
    },

    #[error(
        "the Arrow IPC stream of table `{database}`.`{table}` holds {count} record batches, expected 1"
    )]
    BatchCount {
        database: String,
        table: String,
        count: usize,
    },

    #[error("{count} bytes follow the last table of the payload")]
    TrailingBytes { count: usize },
}

/// Decodes a payload written by [`EncodedEntry::encode`]. Every length is checked against
/// the bytes that remain before it is used.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<WalEntry, DecodeError> {
    let mut reader = PayloadReader { payload, offset: 0 };
    let table_count = reader.u32("the table count")? as usize;
    // Each table takes at least TABLE_OVERHEAD_BYTES, so a corrupt count cannot make us
    // reserve more than the payload could describe.
    let mut tables = Vec::with_capacity(table_count.min(reader.remaining() / TABLE_OVERHEAD_BYTES));
    for _ in 0..table_count {
        let database = reader.name("a database name")?;
        let table = reader.name("a table name")?;
        let ipc_len = reader.u32("an Arrow IPC stream length")? as usize;
        let ipc = reader.take(ipc_len, "an Arrow IPC stream")?;
        let batch = decode_ipc_batch(ipc, &database, &table)?;
        tables.push(TableBatch {
            database,
            table,
            batch,
        });
    }
    if reader.remaining() > 0 {
        return Err(DecodeError::TrailingBytes {
            count: reader.remaining(),
        });
    }
    Ok(WalEntry { tables })
}

/// Decodes one IPC stream holding exactly one record batch.
///
/// Uses the push-based [`StreamDecoder`] over an in-memory buffer rather than
/// `StreamReader`: the reader allocates whatever body length a message header claims before
/// reading it, while the decoder never holds more than the bytes it was given. The bytes are
/// copied into their own buffer so decoded arrays keep only this table's bytes alive, not the
/// whole segment. arrow-ipc still panics on some malformed (but checksum-valid) messages, e.g.
/// a buffer that points past the body, so a panic is turned into an error here: replay must
/// never take the server down over file contents.
fn decode_ipc_batch(ipc: &[u8], database: &str, table: &str) -> Result<RecordBatch, DecodeError> {
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let mut buffer = Buffer::from(ipc.to_vec());
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::with_capacity(1);
        while let Some(batch) = decoder.decode(&mut buffer)? {
            batches.push(batch);
        }
        decoder.finish()?;
        Ok::<_, ArrowError>(batches)
    }));
    let mut batches = match decoded {
        Ok(Ok(batches)) => batches,
        Ok(Err(source)) => {
            return Err(DecodeError::Ipc {
                database: database.to_owned(),
                table: table.to_owned(),
                source,
            });
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "no message".to_owned());
            return Err(DecodeError::IpcPanic {
                database: database.to_owned(),
                table: table.to_owned(),
                message,
            });
        }
    };
    match batches.len() {
        1 => Ok(batches.pop().expect("length checked above")),
        count => Err(DecodeError::BatchCount {
            database: database.to_owned(),
            table: table.to_owned(),
            count,
        }),
    }
}

struct PayloadReader<'a> {
    payload: &'a [u8],
    offset: usize,
}

impl<'a> PayloadReader<'a> {
    fn remaining(&self) -> usize {
        self.payload.len() - self.offset
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                offset: self.payload.len(),
                needed: len,
            });
        }
        let bytes = &self.payload[self.offset..self.offset + len];
        self.offset += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        Ok(bytes.try_into().expect("take returned exactly N bytes"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn name(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(self.array(what)?) as usize;
        let offset = self.offset;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8 { what, offset })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow_array::builder::StringDictionaryBuilder;
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
        UInt64Array,
    };
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use proptest::prelude::*;

    use super::*;

    /// A batch with every column type the ingester writes, nulls included; `seed` varies the
    /// values so entries differ.
    pub(crate) fn cpu_batch(seed: i64, rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "host",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("usage", DataType::Float64, true),
            Field::new("count", DataType::Int64, true),
            Field::new("bytes", DataType::UInt64, true),
            Field::new("message", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]));
        let mut host = StringDictionaryBuilder::<Int32Type>::new();
        for i in 0..rows {
            if i % 5 == 4 {
                host.append_null();
            } else {
                host.append_value(format!("host-{}", (seed + i as i64) % 3));
            }
        }
        let n = |i: usize| seed * 1000 + i as i64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(host.finish()),
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 3 != 1).then(|| n(i) as f64 / 7.0)),
            )),
            Arc::new(Int64Array::from_iter(
                (0..rows).map(|i| (i % 4 != 2).then(|| -n(i))),
            )),
            Arc::new(UInt64Array::from_iter(
                (0..rows).map(|i| (i % 2 == 0).then(|| n(i) as u64)),
            )),
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 3 == 0).then(|| format!("msg {}", n(i)))),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| (i % 6 != 5).then_some(i % 2 == 0)),
            )),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                (0..rows).map(|i| 1_700_000_000_000_000_000 + n(i)),
            )),
        ];
        RecordBatch::try_new(schema, columns).expect("columns match the schema")
    }

    /// An entry touching two databases and three tables.
    pub(crate) fn sample_entry(seed: i64) -> WalEntry {
        WalEntry {
            tables: vec![
                TableBatch {
                    database: "telegraf".to_owned(),
                    table: "cpu".to_owned(),
                    batch: cpu_batch(seed, 7),
                },
                TableBatch {
                    database: "telegraf".to_owned(),
                    table: "mem".to_owned(),
                    batch: cpu_batch(seed + 1, 1),
                },
                TableBatch {
                    database: "ünïcode db".to_owned(),
                    table: "cpu".to_owned(),
                    batch: cpu_batch(seed + 2, 0),
                },
            ],
        }
    }

    #[test]
    fn payload_round_trips_batches_of_every_column_type() {
        let entry = sample_entry(3);
        let encoded = EncodedEntry::encode(&entry).unwrap();
        assert_eq!(encoded.payload_crc(), crc32fast::hash(encoded.payload()));
        assert_eq!(encoded.len_bytes(), encoded.payload().len() + 16);
        let decoded = decode_payload(encoded.payload()).unwrap();
        assert_eq!(decoded, entry);
    }

    #[test]
    fn entry_without_tables_round_trips() {
        let entry = WalEntry::default();
        let encoded = EncodedEntry::encode(&entry).unwrap();
        assert_eq!(decode_payload(encoded.payload()).unwrap(), entry);
    }

    #[test]
    fn rejects_table_name_over_u16_length() {
        let mut entry = sample_entry(0);
        entry.tables[0].table = "t".repeat(70_000);
        let err = EncodedEntry::encode(&entry).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NameTooLong {
                    what: "table name",
                    len_bytes: 70_000
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_truncated_payload_at_every_length() {
        let encoded = EncodedEntry::encode(&sample_entry(1)).unwrap();
        let payload = encoded.payload();
        for len in 0..payload.len() {
            assert!(
                decode_payload(&payload[..len]).is_err(),
                "length {len} decoded"
            );
        }
    }

    #[test]
    fn rejects_trailing_bytes() {
        let encoded = EncodedEntry::encode(&sample_entry(1)).unwrap();
        let mut payload = encoded.payload().to_vec();
        payload.push(0);
        assert!(matches!(
            decode_payload(&payload),
            Err(DecodeError::TrailingBytes { count: 1 })
        ));
    }

    #[test]
    fn rejects_invalid_utf8_in_database_name() {
        let encoded = EncodedEntry::encode(&sample_entry(1)).unwrap();
        let mut payload = encoded.payload().to_vec();
        // table count (4), database length (2), then the name "telegraf".
        payload[6] = 0xff;
        assert!(matches!(
            decode_payload(&payload),
            Err(DecodeError::Utf8 {
                what: "a database name",
                offset: 6
            })
        ));
    }

    proptest! {
        #[test]
        fn random_payload_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_payload(&bytes);
        }

        /// Checksums protect against random damage, so this is what a decoder bug or a
        /// crafted file looks like: valid framing around damaged IPC bytes.
        #[test]
        fn damaged_ipc_stream_is_an_error_not_a_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let encoded = EncodedEntry::encode(&sample_entry(5)).unwrap();
            let mut payload = encoded.payload().to_vec();
            for (index, value) in flips {
                let i = index.index(payload.len());
                payload[i] = value;
            }
            let _ = decode_payload(&payload);
        }
    }
}
