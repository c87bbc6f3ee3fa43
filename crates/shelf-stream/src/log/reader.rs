//! Readers of the log: follow the segments from an offset, in this process or another.

use super::*;

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

    pub(super) fn open_segment(&mut self, base: u64) -> Result<(), StreamError> {
        let path = segment_path(&self.dir, base);
        self.file = File::open(&path).map_err(StreamError::io(&path))?;
        self.segment_base = base;
        self.pos = 0;
        self.next = base;
        Ok(())
    }

    /// Moves to the next segment when the current one is sealed and fully read.
    pub(super) fn advance_segment(&mut self) -> Result<bool, StreamError> {
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

    pub(super) fn read_available(
        &mut self,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StreamError> {
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
