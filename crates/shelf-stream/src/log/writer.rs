//! The log's one writer: appends framed records, syncs by the fsync policy, and drops
//! whole segments by retention.

use super::*;

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

    pub(super) fn roll(&mut self) -> Result<(), StreamError> {
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
