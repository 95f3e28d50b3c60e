//! Segment files: naming, the file header, entry framing and the scan that checks it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::entry::{DecodeError, EncodedEntry};
use crate::{Error, Result, SequenceNumber};

/// Format name and version at the start of every segment.
pub(crate) const MAGIC: &[u8; 8] = b"TRBWAL01";
pub(crate) const HEADER_LEN: u64 = MAGIC.len() as u64;
/// `payload_len: u32`, `crc: u32`, `seq: u64`.
pub(crate) const FRAME_HEADER_LEN: usize = 16;
const SUFFIX: &str = ".wal";
const NAME_DIGITS: usize = 20;

/// Why a segment cannot be read past some offset.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error("the file is {len_bytes} bytes, shorter than the 8-byte segment header")]
    ShortHeader { len_bytes: u64 },

    #[error("the file does not start with the segment header TRBWAL01 (found {found:02x?})")]
    BadMagic { found: [u8; 8] },

    #[error(
        "the segment is format version {found}, this server reads version 01; \
         run the version that wrote it"
    )]
    UnsupportedVersion { found: String },

    #[error("an entry header needs 16 bytes, {available} remain")]
    ShortEntryHeader { available: u64 },

    #[error("an entry claims {len_bytes} payload bytes, {available} remain in the file")]
    LengthPastEnd { len_bytes: u64, available: u64 },

    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },

    #[error("entry {seq} does not follow entry {previous}")]
    SequenceNotIncreasing {
        seq: SequenceNumber,
        previous: SequenceNumber,
    },

    #[error("entry {seq} is below the segment's first sequence number {first}")]
    SequenceBeforeSegment {
        seq: SequenceNumber,
        first: SequenceNumber,
    },

    #[error("the segment is named {first}, but an earlier segment already holds entry {previous}")]
    SegmentOverlap {
        first: SequenceNumber,
        previous: SequenceNumber,
    },

    #[error("entry {seq} cannot be decoded")]
    Payload {
        seq: SequenceNumber,
        #[source]
        source: DecodeError,
    },
}

impl Corruption {
    /// Whether this is what a crash while creating the file can leave behind, so the last
    /// segment may be reset: a header cut short, or zeros where the file grew but its data
    /// never reached the disk. Any other header (another version, a foreign file, bit rot in
    /// front of synced entries) is left for an operator to look at.
    pub(crate) fn is_torn_header(&self) -> bool {
        match self {
            Self::ShortHeader { .. } => true,
            Self::BadMagic { found } => found == &[0; 8],
            _ => false,
        }
    }
}

pub(crate) fn file_name(first: SequenceNumber) -> String {
    format!("{:0width$}{SUFFIX}", first.0, width = NAME_DIGITS)
}

fn parse_file_name(name: &str) -> Option<SequenceNumber> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SequenceNumber)
}

/// A segment file and the first sequence number it may hold (its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) first: SequenceNumber,
    pub(crate) path: PathBuf,
}

/// The segments in `dir`, oldest first. Other files are skipped with a warning.
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentFile>> {
    let list_error = |source| Error::ListDir {
        path: dir.to_owned(),
        source,
    };
    let mut segments = Vec::new();
    for dir_entry in fs::read_dir(dir).map_err(list_error)? {
        let dir_entry = dir_entry.map_err(list_error)?;
        let path = dir_entry.path();
        let first = dir_entry.file_name().to_str().and_then(parse_file_name);
        match first {
            Some(first) if dir_entry.file_type().map_err(list_error)?.is_file() => {
                segments.push(SegmentFile { first, path });
            }
            _ => tracing::warn!(
                path = %path.display(),
                "skipping a file in the WAL directory that is not a segment"
            ),
        }
    }
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

/// Checks the 8-byte header at the start of `bytes`.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), Corruption> {
    let Some(found) = bytes.first_chunk::<8>() else {
        return Err(Corruption::ShortHeader {
            len_bytes: bytes.len() as u64,
        });
    };
    if found == MAGIC {
        Ok(())
    } else if found[..6] == MAGIC[..6] {
        Err(Corruption::UnsupportedVersion {
            found: String::from_utf8_lossy(&found[6..]).into_owned(),
        })
    } else {
        Err(Corruption::BadMagic { found: *found })
    }
}

/// The CRC stored in an entry's frame: over the sequence number's bytes, then the payload.
fn frame_crc(seq: SequenceNumber, payload_crc: u32, payload_len: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.0.to_le_bytes());
    hasher.combine(&crc32fast::Hasher::new_with_initial_len(
        payload_crc,
        payload_len,
    ));
    hasher.finalize()
}

/// The 16 bytes written before `entry`'s payload.
pub(crate) fn frame_header(seq: SequenceNumber, entry: &EncodedEntry) -> [u8; FRAME_HEADER_LEN] {
    let payload_len = entry.payload().len();
    let crc = frame_crc(seq, entry.payload_crc(), payload_len as u64);
    let mut header = [0; FRAME_HEADER_LEN];
    header[..4].copy_from_slice(
        &u32::try_from(payload_len)
            .expect("EncodedEntry::encode rejects payloads over u32::MAX")
            .to_le_bytes(),
    );
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header[8..].copy_from_slice(&seq.0.to_le_bytes());
    header
}

/// One framed entry whose checksum matched.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) seq: SequenceNumber,
    pub(crate) payload: &'a [u8],
}

/// Walks the framed entries of a segment's bytes (header already checked), checking lengths
/// and checksums. Sequence order and payloads are the caller's to check.
pub(crate) struct FrameScanner<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> FrameScanner<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: HEADER_LEN as usize,
        }
    }

    /// Where the next frame starts; after a bad frame, where that frame started.
    pub(crate) fn offset(&self) -> u64 {
        self.offset as u64
    }

    pub(crate) fn next_frame(&mut self) -> Option<Result<Frame<'a>, Corruption>> {
        let rest = self.bytes.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let Some(header) = rest.first_chunk::<FRAME_HEADER_LEN>() else {
            return Some(Err(Corruption::ShortEntryHeader {
                available: rest.len() as u64,
            }));
        };
        let (len, rest_of_header) = header.split_first_chunk::<4>().expect("16 > 4");
        let (crc, seq) = rest_of_header.split_first_chunk::<4>().expect("12 > 4");
        let len = u32::from_le_bytes(*len) as usize;
        let stored = u32::from_le_bytes(*crc);
        let seq = SequenceNumber(u64::from_le_bytes(
            *seq.first_chunk::<8>().expect("8 bytes remain"),
        ));
        let available = rest.len() - FRAME_HEADER_LEN;
        if len > available {
            return Some(Err(Corruption::LengthPastEnd {
                len_bytes: len as u64,
                available: available as u64,
            }));
        }
        let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        let computed = frame_crc(seq, crc32fast::hash(payload), len as u64);
        if computed != stored {
            return Some(Err(Corruption::Checksum { stored, computed }));
        }
        self.offset += FRAME_HEADER_LEN + len;
        Some(Ok(Frame { seq, payload }))
    }
}

/// Creates a segment holding only the header, and fsyncs `dir` so its name survives a
/// crash. The header itself becomes durable with the first fsync of the segment; if it
/// does not, replay resets the torn header.
pub(crate) fn create(dir: &Path, first: SequenceNumber) -> Result<(File, PathBuf)> {
    let path = dir.join(file_name(first));
    let create_error = |source| Error::CreateSegment {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(create_error)?;
    file.write_all(MAGIC).map_err(create_error)?;
    sync_dir(dir)?;
    Ok((file, path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::SyncDir {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::sample_entry;

    #[test]
    fn file_names_sort_by_sequence_number() {
        assert_eq!(file_name(SequenceNumber(1)), "00000000000000000001.wal");
        assert_eq!(
            parse_file_name(&file_name(SequenceNumber(u64::MAX))),
            Some(SequenceNumber(u64::MAX))
        );
        assert_eq!(parse_file_name("1.wal"), None);
        assert_eq!(parse_file_name("0000000000000000000x.wal"), None);
        assert_eq!(parse_file_name("00000000000000000001.wal.tmp"), None);
    }

    #[test]
    fn frame_checksum_covers_sequence_number_and_payload() {
        let entry = EncodedEntry::encode(&sample_entry(1)).unwrap();
        let seq = SequenceNumber(42);
        let header = frame_header(seq, &entry);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.0.to_le_bytes());
        hasher.update(entry.payload());
        assert_eq!(header[4..8], hasher.finalize().to_le_bytes());

        let mut segment = MAGIC.to_vec();
        segment.extend_from_slice(&header);
        segment.extend_from_slice(entry.payload());
        let mut scanner = FrameScanner::new(&segment);
        let frame = scanner.next_frame().unwrap().unwrap();
        assert_eq!(frame.seq, seq);
        assert_eq!(frame.payload, entry.payload());
        assert!(scanner.next_frame().is_none());
    }

    #[test]
    fn header_of_another_version_is_not_torn() {
        let err = check_header(b"TRBWAL02").unwrap_err();
        assert!(!err.is_torn_header(), "{err}");
        assert!(check_header(b"TRBW").unwrap_err().is_torn_header());
        assert!(check_header(&[0; 8]).unwrap_err().is_torn_header());
        assert!(!check_header(b"PAR1\0\0\0\0").unwrap_err().is_torn_header());
        assert!(check_header(MAGIC).is_ok());
    }
}
