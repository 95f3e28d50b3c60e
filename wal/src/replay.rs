//! Replay on open: every entry of every segment, in order, with the torn tail of the last
//! segment cut off.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::entry::{WalEntry, decode_payload};
use crate::segment::{self, Corruption, FrameScanner, HEADER_LEN, MAGIC, SegmentFile};
use crate::{Error, ReplayError, Result, SequenceNumber, error_chain};

/// What open needs to know to continue the log.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// Oldest first.
    pub(crate) segments: Vec<SegmentFile>,
    /// Bytes of the last segment that hold valid data (after any repair).
    pub(crate) last_segment_len: u64,
    /// Whether the last segment holds any entry.
    pub(crate) last_segment_has_entries: bool,
    /// The highest sequence number replayed.
    pub(crate) last_seq: Option<SequenceNumber>,
}

pub(crate) fn replay(
    dir: &Path,
    on_entry: &mut dyn FnMut(SequenceNumber, WalEntry) -> Result<(), ReplayError>,
) -> Result<Replayed> {
    let segments = segment::list(dir)?;
    let mut last_seq: Option<SequenceNumber> = None;
    let mut last_segment_len = 0;
    let mut last_segment_has_entries = false;

    for (index, seg) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let corrupt = |offset, source| Error::Corrupt {
            path: seg.path.clone(),
            offset,
            source,
        };
        if let Some(previous) = last_seq
            && seg.first <= previous
        {
            return Err(corrupt(
                0,
                Corruption::SegmentOverlap {
                    first: seg.first,
                    previous,
                },
            ));
        }

        let bytes = fs::read(&seg.path).map_err(|source| Error::ReadSegment {
            path: seg.path.clone(),
            source,
        })?;
        match segment::check_header(&bytes) {
            Ok(()) => {}
            Err(reason) if is_last && reason.is_torn_header() => {
                reset_header(&seg.path, bytes.len() as u64, &reason)?;
                last_segment_len = HEADER_LEN;
                last_segment_has_entries = false;
                continue;
            }
            Err(reason) => return Err(corrupt(0, reason)),
        }

        let mut scanner = FrameScanner::new(&bytes);
        let mut has_entries = false;
        loop {
            let offset = scanner.offset();
            let Some(frame) = scanner.next_frame() else {
                break;
            };
            let checked = frame.and_then(|frame| {
                if frame.seq < seg.first {
                    return Err(Corruption::SequenceBeforeSegment {
                        seq: frame.seq,
                        first: seg.first,
                    });
                }
                if let Some(previous) = last_seq
                    && frame.seq <= previous
                {
                    return Err(Corruption::SequenceNotIncreasing {
                        seq: frame.seq,
                        previous,
                    });
                }
                decode_payload(frame.payload)
                    .map(|entry| (frame.seq, entry))
                    .map_err(|source| Corruption::Payload {
                        seq: frame.seq,
                        source,
                    })
            });
            match checked {
                Ok((seq, entry)) => {
                    on_entry(seq, entry).map_err(|source| Error::Replay { seq, source })?;
                    last_seq = Some(seq);
                    has_entries = true;
                }
                Err(reason) if is_last => {
                    cut_tail(&seg.path, offset, bytes.len() as u64, &reason)?;
                    break;
                }
                Err(reason) => return Err(corrupt(offset, reason)),
            }
        }
        if is_last {
            last_segment_len = scanner.offset();
            last_segment_has_entries = has_entries;
        }
    }

    Ok(Replayed {
        segments,
        last_segment_len,
        last_segment_has_entries,
        last_seq,
    })
}

/// Cuts the last segment at `offset`, where its first bad entry starts: a crash mid-write
/// leaves exactly such a tail, and nothing after it was acknowledged as durable.
fn cut_tail(path: &Path, offset: u64, file_len: u64, reason: &Corruption) -> Result<()> {
    tracing::warn!(
        segment = %path.display(),
        offset,
        dropped_bytes = file_len - offset,
        reason = %error_chain(reason),
        "truncating the torn tail of the last WAL segment"
    );
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.set_len(offset)?;
            file.sync_all()
        })
        .map_err(|source| Error::RepairSegment {
            path: path.to_owned(),
            offset,
            source,
        })
}

/// Rewrites the header of a last segment whose creation was cut short.
fn reset_header(path: &Path, file_len: u64, reason: &Corruption) -> Result<()> {
    tracing::warn!(
        segment = %path.display(),
        offset = 0,
        dropped_bytes = file_len,
        reason = %reason,
        "rewriting the torn header of the last WAL segment"
    );
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| {
            file.write_all(MAGIC)?;
            file.sync_all()
        })
        .map_err(|source| Error::RepairSegment {
            path: path.to_owned(),
            offset: 0,
            source,
        })
}
