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

/// The writer of a log directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    _lock: File,
    active: File,
    active_base: u64,
    active_bytes: u64,
    next_offset: u64,
    last_sync: Instant,
    unsynced: bool,
}

impl Log {
    /// Opens or creates the log in `dir`, recovering from a torn tail.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Self, StreamError> {
        fs::create_dir_all(dir).map_err(StreamError::io(dir))?;
        let lock = lock_writer(dir)?;
        let mut bases = segments(dir)?;
        if bases.is_empty() {
            File::create(segment_path(dir, 0)).map_err(StreamError::io(dir))?;
            bases.push(0);
        }
        let active_base = *bases.last().unwrap();
        let path = segment_path(dir, active_base);
        let active = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        let (mut pos, mut count) = (0u64, 0u64);
        loop {
            match read_frame(&active, &path, pos, options.max_record_bytes, true) {
                Ok(Frame::Complete { next, .. }) => {
                    pos = next;
                    count += 1;
                }
                Ok(Frame::End) => break,
                Err(StreamError::Corrupt {
                    path,
                    position,
                    reason,
                }) => {
                    return Err(StreamError::Corrupt {
                        path,
                        position,
                        reason: format!(
                            "{reason}, with records after it; refusing to cut acknowledged \
                             records off (`shelf repair-log {}` replaces damaged records with \
                             placeholders and keeps their bytes aside)",
                            dir.display()
                        ),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        let len = active.metadata().map_err(StreamError::io(&path))?.len();
        if len > pos {
            tracing::warn!(path = %path.display(), cut = len - pos, "cutting a torn record off the end of the log");
            active.set_len(pos).map_err(StreamError::io(&path))?;
            active.sync_all().map_err(StreamError::io(&path))?;
        }
        Ok(Self {
            dir: dir.into(),
            options,
            _lock: lock,
            active,
            active_base,
            active_bytes: pos,
            next_offset: active_base + count,
            last_sync: Instant::now(),
            unsynced: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// A reader positioned at the first retained record.
    pub fn reader(&self) -> Result<LogReader, StreamError> {
        LogReader::open(&self.dir, self.options.max_record_bytes)
    }

    /// The fsync period of an `Interval` policy: whoever holds the log calls [`Log::sync`]
    /// this often, so records appended and then left alone are on disk within it.
    pub fn sync_interval(&self) -> Option<Duration> {
        match self.options.fsync {
            FsyncPolicy::Interval(every) => Some(every),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        }
    }

    /// Whether appended records wait for an fsync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// fsyncs appended records now.
    pub fn sync(&mut self) -> Result<(), StreamError> {
        if self.unsynced {
            let path = segment_path(&self.dir, self.active_base);
            self.active.sync_data().map_err(StreamError::io(path))?;
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), StreamError> {
        self.sync()?;
        let path = segment_path(&self.dir, self.next_offset);
        self.active = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(StreamError::io(&self.dir))?;
        self.active_base = self.next_offset;
        self.active_bytes = 0;
        Ok(())
    }

    /// Deletes whole sealed segments, oldest first, that end at or before
    /// `consumed_before` (everything in them is applied) and that `retention` lets go:
    /// the log holds more than `keep_bytes` without them, or they were last written more
    /// than `max_age` ago. Returns the first offset still retained and the segments deleted.
    pub fn apply_retention(
        &mut self,
        consumed_before: u64,
        retention: &Retention,
    ) -> Result<(u64, usize), StreamError> {
        let bases = segments(&self.dir)?;
        let mut first = bases.first().copied().unwrap_or(0);
        if retention.keep_bytes.is_none() && retention.max_age.is_none() {
            return Ok((first, 0));
        }
        let meta: Vec<(u64, Option<std::time::SystemTime>)> = bases
            .iter()
            .map(|b| {
                let m = fs::metadata(segment_path(&self.dir, *b)).ok();
                (
                    m.as_ref().map_or(0, |m| m.len()),
                    m.and_then(|m| m.modified().ok()),
                )
            })
            .collect();
        let mut total: u64 = meta.iter().map(|m| m.0).sum();
        let mut deleted = 0;
        for (i, base) in bases.iter().enumerate() {
            // The last segment is the active one: never deleted.
            let Some(&end) = bases.get(i + 1) else { break };
            let (size, modified) = meta[i];
            let over_budget = retention
                .keep_bytes
                .is_some_and(|keep| total - size >= keep);
            let too_old = match (retention.max_age, modified) {
                (Some(max), Some(at)) => at.elapsed().is_ok_and(|age| age > max),
                _ => false,
            };
            if end > consumed_before || !(over_budget || too_old) {
                break;
            }
            let path = segment_path(&self.dir, *base);
            fs::remove_file(&path).map_err(StreamError::io(&path))?;
            total -= size;
            first = end;
            deleted += 1;
        }
        Ok((first, deleted))
    }
}

/// How much of a log's applied history [`Log::apply_retention`] keeps. Either limit lets a
/// segment go (as in Kafka); with neither, everything is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at least this many bytes of segments.
    pub keep_bytes: Option<u64>,
    /// Delete applied segments last written longer ago than this.
    pub max_age: Option<Duration>,
}

impl Sink for Log {
    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Range<u64>, StreamError> {
        let start = self.next_offset;
        if let Some(big) = payloads
            .iter()
            .find(|p| p.len() > self.options.max_record_bytes)
        {
            return Err(StreamError::TooLarge {
                size: big.len(),
                limit: self.options.max_record_bytes,
            });
        }
        if self.active_bytes >= self.options.segment_bytes {
            self.roll()?;
        }
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER as usize).sum());
        for payload in payloads {
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            buf.extend_from_slice(payload);
        }
        let path = segment_path(&self.dir, self.active_base);
        if let Err(e) = self.active.write_all(&buf) {
            // Leave no partial frames behind: a later append must start on a frame boundary.
            let _ = self.active.set_len(self.active_bytes);
            return Err(StreamError::io(path)(e));
        }
        self.active_bytes += buf.len() as u64;
        self.next_offset += payloads.len() as u64;
        self.unsynced = true;
        match self.options.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync()?,
            _ => {}
        }
        Ok(start..self.next_offset)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "final fsync of the log failed");
        }
    }
}

/// What [`repair`] did to one damaged record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    pub segment: PathBuf,
    /// The record's offset in the log.
    pub offset: u64,
    /// Where its original bytes (header and payload) were saved.
    pub saved_to: PathBuf,
}

/// Repairs the log in `dir` (no writer may have it open): every frame whose checksum does
/// not match but whose length leads to a valid next frame (or the end of its segment) is
/// saved to `SEGMENT.damaged-OFFSET` beside its segment and replaced in place by a
/// placeholder of the same size, `{}` padded with spaces, so every later record keeps its
/// offset and consumers dead-letter the placeholder. A torn tail is left for
/// [`Log::open`] to cut. Damage whose length cannot be trusted is reported, not repaired.
pub fn repair(dir: &Path, max_record_bytes: usize) -> Result<Vec<Repaired>, StreamError> {
    let _lock = lock_writer(dir)?;
    let mut repaired = Vec::new();
    for base in segments(dir)? {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        let (mut pos, mut offset) = (0u64, base);
        loop {
            match read_frame(&file, &path, pos, max_record_bytes, true) {
                Ok(Frame::Complete { next, .. }) => {
                    pos = next;
                    offset += 1;
                }
                Ok(Frame::End) => break,
                Err(StreamError::Corrupt { reason, .. }) if reason == CHECKSUM_MISMATCH => {
                    let mut header = [0u8; HEADER as usize];
                    file.read_exact_at(&mut header, pos)
                        .map_err(StreamError::io(&path))?;
                    let len = u64::from(u32::from_le_bytes(header[..4].try_into().unwrap()));
                    let next = pos + HEADER + len;
                    // The length is trusted only if a valid frame (or the segment's end)
                    // follows.
                    let end = file.metadata().map_err(StreamError::io(&path))?.len();
                    let follows = next == end
                        || matches!(
                            read_frame(&file, &path, next, max_record_bytes, true),
                            Ok(Frame::Complete { .. })
                        );
                    if !follows || len < 2 {
                        return Err(StreamError::Corrupt {
                            path,
                            position: pos,
                            reason: "damaged record whose length cannot be trusted; not repaired"
                                .into(),
                        });
                    }
                    let mut original = vec![0u8; (HEADER + len) as usize];
                    file.read_exact_at(&mut original, pos)
                        .map_err(StreamError::io(&path))?;
                    let saved_to = path.with_extension(format!("damaged-{offset}"));
                    fs::write(&saved_to, &original).map_err(StreamError::io(&saved_to))?;
                    let mut placeholder = b"{}".to_vec();
                    placeholder.resize(len as usize, b' ');
                    let mut frame = Vec::with_capacity(original.len());
                    frame.extend_from_slice(&(len as u32).to_le_bytes());
                    frame.extend_from_slice(&crc32fast::hash(&placeholder).to_le_bytes());
                    frame.extend_from_slice(&placeholder);
                    file.write_all_at(&frame, pos)
                        .map_err(StreamError::io(&path))?;
                    file.sync_data().map_err(StreamError::io(&path))?;
                    tracing::warn!(segment = %path.display(), offset, saved_to = %saved_to.display(), "replaced a damaged record with a placeholder");
                    repaired.push(Repaired {
                        segment: path.clone(),
                        offset,
                        saved_to,
                    });
                    pos = next;
                    offset += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(repaired)
}

/// A reader of a log directory (partition 0), usable while a writer appends.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    max_record_bytes: usize,
    segment_base: u64,
    file: File,
    pos: u64,
    next: u64,
    /// How far [`Source::end_offset`] has scanned: segment base, byte position, offset.
    /// The next call goes on from there (or from the reader, if it is further), so
    /// following a growing log costs each frame one header read.
    scanned: (u64, u64, u64),
}

impl LogReader {
    /// Opens a reader at the first retained record.
    pub fn open(dir: &Path, max_record_bytes: usize) -> Result<Self, StreamError> {
        let bases = segments(dir)?;
        let base = bases.first().copied().unwrap_or(0);
        let path = segment_path(dir, base);
        let file = File::open(&path).map_err(StreamError::io(&path))?;
        Ok(Self {
            dir: dir.into(),
            max_record_bytes,
            segment_base: base,
            file,
            pos: 0,
            next: base,
            scanned: (base, 0, base),
        })
    }

    /// The offset of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn open_segment(&mut self, base: u64) -> Result<(), StreamError> {
        let path = segment_path(&self.dir, base);
        self.file = File::open(&path).map_err(StreamError::io(&path))?;
        self.segment_base = base;
        self.pos = 0;
        self.next = base;
        Ok(())
    }

    /// Moves to the next segment when the current one is sealed and fully read.
    fn advance_segment(&mut self) -> Result<bool, StreamError> {
        let bases = segments(&self.dir)?;
        match bases.iter().find(|b| **b > self.segment_base) {
            Some(&next_base) if next_base == self.next => {
                self.open_segment(next_base)?;
                Ok(true)
            }
            Some(&next_base) => Err(StreamError::Corrupt {
                path: segment_path(&self.dir, self.segment_base),
                position: self.pos,
                reason: format!(
                    "segment ends at offset {} but the next one starts at {next_base}",
                    self.next
                ),
            }),
            None => Ok(false),
        }
    }

    fn read_available(&mut self, max: usize, out: &mut Vec<Record>) -> Result<(), StreamError> {
        let path = segment_path(&self.dir, self.segment_base);
        while out.len() < max {
            match read_frame(&self.file, &path, self.pos, self.max_record_bytes, true)? {
                Frame::Complete { payload, next } => {
                    out.push(Record {
                        partition: 0,
                        offset: self.next,
                        payload,
                    });
                    self.pos = next;
                    self.next += 1;
                }
                Frame::End => {
                    if !self.advance_segment()? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Source for LogReader {
    fn partitions(&self) -> Vec<u32> {
        vec![0]
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), StreamError> {
        if partition != 0 {
            return Err(StreamError::NoPartition(partition));
        }
        let bases = segments(&self.dir)?;
        let first = bases.first().copied().unwrap_or(0);
        let Some(&base) = bases.iter().rev().find(|b| **b <= offset) else {
            return Err(StreamError::OffsetGone {
                path: self.dir.clone(),
                offset,
                first,
            });
        };
        self.open_segment(base)?;
        let path = segment_path(&self.dir, base);
        while self.next < offset {
            match read_frame(&self.file, &path, self.pos, self.max_record_bytes, false)? {
                Frame::Complete { next, .. } => {
                    self.pos = next;
                    self.next += 1;
                }
                Frame::End => {
                    let reason = format!(
                        "seek to offset {offset} beyond the end of the log ({})",
                        self.next
                    );
                    return Err(StreamError::Corrupt {
                        path,
                        position: self.pos,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, StreamError> {
        let started = Instant::now();
        let mut out = Vec::new();
        loop {
            self.read_available(max, &mut out)?;
            if !out.is_empty() || started.elapsed() >= wait {
                return Ok(out);
            }
            std::thread::sleep(IDLE_POLL.min(wait));
        }
    }

    fn end_offset(&mut self, partition: u32) -> Result<u64, StreamError> {
        if partition != 0 {
            return Err(StreamError::NoPartition(partition));
        }
        let bases = segments(&self.dir)?;
        let (mut base, mut pos, mut end) = if self.scanned.2 > self.next {
            self.scanned
        } else {
            (self.segment_base, self.pos, self.next)
        };
        if !bases.contains(&base) {
            // Retention removed the scanned segment: start over from the reader.
            (base, pos, end) = (self.segment_base, self.pos, self.next);
        }
        loop {
            let path = segment_path(&self.dir, base);
            let file = File::open(&path).map_err(StreamError::io(&path))?;
            while let Frame::Complete { next, .. } =
                read_frame(&file, &path, pos, self.max_record_bytes, false)?
            {
                pos = next;
                end += 1;
            }
            match bases.iter().find(|b| **b > base) {
                Some(&next_base) => {
                    base = next_base;
                    pos = 0;
                    end = next_base;
                }
                None => {
                    self.scanned = (base, pos, end);
                    return Ok(end);
                }
            }
        }
    }
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
