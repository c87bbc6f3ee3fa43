//! The embedded durable log: one directory per topic, append-only segment files named by
//! their first offset, each record framed as `[len u32 LE][crc32 u32 LE][payload]`.
//! One writer per directory (a lock file); any number of readers, in the same process or
//! another. A torn tail left by a crash (an incomplete last frame) is cut off when the
//! writer reopens the log; damage with records after it refuses to open, since cutting
//! there would drop acknowledged records: [`repair`] replaces each damaged frame with a
//! placeholder and keeps its bytes in a side file.

use crate::{Record, Sink, Source, StreamError, IDLE_POLL};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod reader;
mod repair;
mod writer;

pub use reader::LogReader;
pub use repair::{repair, Repaired};
pub use writer::{Log, Retention};

const HEADER: u64 = 8;
const CHECKSUM_MISMATCH: &str = "checksum mismatch";
const SEGMENT_SUFFIX: &str = ".seg";

/// When appended records are fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before `append` returns: an acknowledged record survives power loss.
    Always,
    /// At most this long after the append (the OS keeps them across a process crash).
    Interval(Duration),
    /// Leave it to the OS.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    /// `always`, `never`, or an interval in milliseconds such as `100ms`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            ms => ms
                .strip_suffix("ms")
                .and_then(|n| n.parse().ok())
                .map(|n| Self::Interval(Duration::from_millis(n)))
                .ok_or_else(|| format!("expected always, never or <N>ms, got `{s}`")),
        }
    }
}

/// Settings of a log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    pub fsync: FsyncPolicy,
    /// A new segment starts once the active one reaches this size.
    pub segment_bytes: u64,
    /// Largest accepted record.
    pub max_record_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
        }
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// Segment bases in order.
fn segments(dir: &Path) -> Result<Vec<u64>, StreamError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(StreamError::io(dir))? {
        let name = entry.map_err(StreamError::io(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|b| b.parse().ok())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Takes the writer lock of the log in `dir` (held while the returned file is open).
fn lock_writer(dir: &Path) -> Result<File, StreamError> {
    let lock_path = dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(StreamError::io(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(StreamError::Locked(dir.into()));
    }
    Ok(lock)
}

/// What reading a frame at a position found.
enum Frame {
    Complete {
        payload: Vec<u8>,
        next: u64,
    },
    /// Nothing, or a partial frame, at the end of the file (still being written, or torn).
    End,
}

fn read_frame(
    file: &File,
    path: &Path,
    pos: u64,
    max: usize,
    want_payload: bool,
) -> Result<Frame, StreamError> {
    let len_file = file.metadata().map_err(StreamError::io(path))?.len();
    if pos + HEADER > len_file {
        return Ok(Frame::End);
    }
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, pos)
        .map_err(StreamError::io(path))?;
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    let next = pos + HEADER + len;
    if len as usize > max {
        if next >= len_file {
            return Ok(Frame::End);
        }
        let reason = format!("frame length {len} exceeds the record limit");
        return Err(StreamError::Corrupt {
            path: path.into(),
            position: pos,
            reason,
        });
    }
    if next > len_file {
        return Ok(Frame::End);
    }
    if !want_payload {
        return Ok(Frame::Complete {
            payload: Vec::new(),
            next,
        });
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, pos + HEADER)
        .map_err(StreamError::io(path))?;
    if crc32fast::hash(&payload) != crc {
        if next == len_file {
            return Ok(Frame::End);
        }
        let reason = CHECKSUM_MISMATCH.to_string();
        return Err(StreamError::Corrupt {
            path: path.into(),
            position: pos,
            reason,
        });
    }
    Ok(Frame::Complete { payload, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(range: Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("record {i}").into_bytes()).collect()
    }

    #[test]
    fn appends_replay_from_any_offset_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 100,
            ..Default::default()
        };
        let mut log = Log::open(dir.path(), options).unwrap();
        for chunk in 0..10 {
            assert_eq!(
                log.append(&payloads(chunk * 5..chunk * 5 + 5)).unwrap(),
                (chunk as u64 * 5)..(chunk as u64 * 5 + 5)
            );
        }
        assert!(segments(dir.path()).unwrap().len() > 3);
        let mut reader = log.reader().unwrap();
        assert_eq!(reader.end_offset(0).unwrap(), 50);
        let all = reader.poll(100, Duration::ZERO).unwrap();
        assert_eq!(all.len(), 50);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as u64 && r.payload == format!("record {i}").into_bytes()));
        reader.seek(0, 37).unwrap();
        let rest = reader.poll(100, Duration::ZERO).unwrap();
        assert_eq!(rest.first().unwrap().offset, 37);
        assert_eq!(rest.len(), 13);
        assert!(reader.poll(1, Duration::from_millis(5)).unwrap().is_empty());
        log.append(&payloads(50..51)).unwrap();
        assert_eq!(reader.poll(10, Duration::ZERO).unwrap()[0].offset, 50);
    }

    /// Frames carry the IEEE CRC-32 (the standard check value), as logs written before
    /// crc32fast replaced the hand-written table did.
    #[test]
    fn frames_carry_the_ieee_crc32() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.append(&[b"123456789".to_vec()]).unwrap();
        let bytes = fs::read(segment_path(dir.path(), 0)).unwrap();
        assert_eq!(bytes[..8], [9, 0, 0, 0, 0x26, 0x39, 0xF4, 0xCB]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_offsets_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
            log.append(&payloads(0..3)).unwrap();
        }
        let seg = segment_path(dir.path(), 0);
        let mut file = OpenOptions::new().append(true).open(&seg).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        let mut reader = LogReader::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            reader.poll(10, Duration::ZERO).unwrap().len(),
            3,
            "a partial frame is not returned"
        );
        let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.next_offset(), 3);
        assert_eq!(log.append(&payloads(3..4)).unwrap(), 3..4);
        let mut reader = log.reader().unwrap();
        let records = reader.poll(10, Duration::ZERO).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].payload, b"record 3");
    }

    #[test]
    fn damage_before_the_tail_refuses_to_open_and_repair_keeps_every_other_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
            log.append(&payloads(0..5)).unwrap();
        }
        // Flip one payload byte of record 2 ("record 2" frames are 8 + 8 bytes).
        let seg = segment_path(dir.path(), 0);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let at = 2 * 16 + HEADER + 3;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
        drop(file);
        let before = fs::read(&seg).unwrap();
        // Opening must not cut records 2..5 off as if they were a torn tail.
        let e = Log::open(dir.path(), LogOptions::default()).unwrap_err();
        assert!(e.to_string().contains("shelf repair-log"), "{e}");
        assert_eq!(fs::read(&seg).unwrap(), before, "the log was changed");

        let repaired = repair(dir.path(), 1 << 20).unwrap();
        assert_eq!(repaired.len(), 1);
        assert_eq!(repaired[0].offset, 2);
        assert_eq!(
            fs::read(&repaired[0].saved_to).unwrap(),
            before[32..48].to_vec(),
            "the damaged frame is kept aside as it was"
        );
        let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.next_offset(), 5);
        log.append(&payloads(5..6)).unwrap();
        let records = log.reader().unwrap().poll(10, Duration::ZERO).unwrap();
        let got: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(got.len(), 6);
        assert_eq!(got[2], b"{}      ");
        for i in [0usize, 1, 3, 4, 5] {
            assert_eq!(got[i], format!("record {i}").as_bytes());
        }
        assert!(matches!(
            repair(dir.path(), 1 << 20),
            Err(StreamError::Locked(_))
        ));
        drop(log);
        assert!(
            repair(dir.path(), 1 << 20).unwrap().is_empty(),
            "nothing left to repair"
        );
    }

    #[test]
    fn end_offsets_follow_appends_across_segments_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 100,
            ..Default::default()
        };
        let mut log = Log::open(dir.path(), options).unwrap();
        let mut reader = log.reader().unwrap();
        assert_eq!(reader.end_offset(0).unwrap(), 0);
        let mut read = 0;
        for i in 0..40u32 {
            log.append(&payloads(i..i + 1)).unwrap();
            assert_eq!(reader.end_offset(0).unwrap(), u64::from(i) + 1);
            if i % 3 == 0 {
                read += reader.poll(2, Duration::ZERO).unwrap().len();
                assert_eq!(reader.end_offset(0).unwrap(), u64::from(i) + 1);
            }
        }
        assert!(read > 0);
        reader.seek(0, 5).unwrap();
        assert_eq!(reader.end_offset(0).unwrap(), 40);
        assert_eq!(reader.poll(100, Duration::ZERO).unwrap().len(), 35);
        assert_eq!(reader.end_offset(0).unwrap(), 40);
    }

    #[test]
    fn retention_by_age_deletes_only_applied_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 64,
            ..Default::default()
        };
        let mut log = Log::open(dir.path(), options).unwrap();
        for i in 0..20 {
            log.append(&payloads(i..i + 1)).unwrap();
        }
        let any_age = Retention {
            max_age: Some(Duration::ZERO),
            ..Default::default()
        };
        std::thread::sleep(Duration::from_millis(5));
        let (first, deleted) = log.apply_retention(8, &any_age).unwrap();
        assert!(
            deleted > 0 && first <= 8,
            "first {first}, deleted {deleted}"
        );
        let mut reader = log.reader().unwrap();
        reader.seek(0, 8).unwrap();
        assert_eq!(reader.poll(100, Duration::ZERO).unwrap().len(), 12);
        // Everything applied and old: all but the active segment goes.
        let (first, _) = log.apply_retention(20, &any_age).unwrap();
        assert!(first > 8);
        log.append(&payloads(20..21)).unwrap();
        assert_eq!(log.next_offset(), 21);
    }

    #[test]
    fn one_writer_at_a_time_and_retention_keeps_unconsumed_records() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 64,
            ..Default::default()
        };
        let mut log = Log::open(dir.path(), options.clone()).unwrap();
        assert!(matches!(
            Log::open(dir.path(), options),
            Err(StreamError::Locked(_))
        ));
        for i in 0..20 {
            log.append(&payloads(i..i + 1)).unwrap();
        }
        let keep_all = Retention::default();
        assert_eq!(log.apply_retention(20, &keep_all).unwrap().1, 0);
        let young = Retention {
            max_age: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        assert_eq!(
            log.apply_retention(20, &young).unwrap().1,
            0,
            "nothing is old yet"
        );
        let no_bytes = Retention {
            keep_bytes: Some(0),
            ..Default::default()
        };
        let (first, deleted) = log.apply_retention(10, &no_bytes).unwrap();
        assert!(deleted > 0);
        assert!(first <= 10 && first > 0, "first retained offset {first}");
        let mut reader = log.reader().unwrap();
        assert!(matches!(
            reader.seek(0, 0),
            Err(StreamError::OffsetGone { .. })
        ));
        reader.seek(0, 10).unwrap();
        assert_eq!(reader.poll(100, Duration::ZERO).unwrap().len(), 10);
    }
}
