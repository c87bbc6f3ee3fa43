//! A JSON-lines file as a source for bulk import: one record per non-empty line, the offset
//! being the line number. Shows a progress line on a terminal.

use crate::{Record, Source, StreamError};
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Reads a `.jsonl` file line by line.
#[derive(Debug)]
pub struct JsonlSource {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    total_bytes: u64,
    read_bytes: u64,
    progress: Option<Progress>,
}

#[derive(Debug)]
struct Progress {
    started: Instant,
    last: Instant,
}

impl JsonlSource {
    /// Opens `path`; `progress` draws a progress line on stderr when it is a terminal.
    pub fn open(path: &Path, progress: bool) -> Result<Self, StreamError> {
        let file = File::open(path).map_err(StreamError::io(path))?;
        let total_bytes = file.metadata().map_err(StreamError::io(path))?.len();
        let progress = (progress && std::io::stderr().is_terminal()).then(|| Progress {
            started: Instant::now(),
            last: Instant::now(),
        });
        Ok(Self {
            path: path.into(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            total_bytes,
            read_bytes: 0,
            progress,
        })
    }

    /// Bytes read so far, and the file size.
    pub fn bytes(&self) -> (u64, u64) {
        (self.read_bytes, self.total_bytes)
    }

    fn draw(&mut self, done: bool) {
        let Some(p) = &mut self.progress else { return };
        if !done && p.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        p.last = Instant::now();
        let pct = if self.total_bytes == 0 {
            100.0
        } else {
            self.read_bytes as f64 * 100.0 / self.total_bytes as f64
        };
        let rate = self.line as f64 / p.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r{}: {pct:5.1}%  {} lines  {rate:.0} lines/s{}",
            self.path.display(),
            self.line,
            if done { "\n" } else { "" }
        );
    }
}

impl Source for JsonlSource {
    fn partitions(&self) -> Vec<u32> {
        vec![0]
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), StreamError> {
        if partition != 0 {
            return Err(StreamError::NoPartition(partition));
        }
        self.reader
            .seek(SeekFrom::Start(0))
            .map_err(StreamError::io(&self.path))?;
        self.line = 0;
        self.read_bytes = 0;
        let mut buf = Vec::new();
        while self.line < offset {
            buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(StreamError::io(&self.path))?;
            if n == 0 {
                break;
            }
            self.read_bytes += n as u64;
            self.line += 1;
        }
        Ok(())
    }

    fn poll(&mut self, max: usize, _wait: Duration) -> Result<Vec<Record>, StreamError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while out.len() < max {
            buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(StreamError::io(&self.path))?;
            if n == 0 {
                self.draw(true);
                self.progress = None;
                break;
            }
            self.read_bytes += n as u64;
            let offset = self.line;
            self.line += 1;
            let text = buf.trim_ascii();
            if !text.is_empty() {
                out.push(Record {
                    partition: 0,
                    offset,
                    payload: text.to_vec(),
                });
            }
        }
        self.draw(false);
        Ok(out)
    }

    fn end_offset(&mut self, _partition: u32) -> Result<u64, StreamError> {
        // Unknown without reading the whole file; the source is finite, so report the
        // position once the file is exhausted.
        Ok(self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_non_empty_lines_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n  {\"a\":2}  \n{\"a\":3}").unwrap();
        let mut source = JsonlSource::open(&path, false).unwrap();
        let records = source.poll(10, Duration::ZERO).unwrap();
        let got: Vec<(u64, &[u8])> = records.iter().map(|r| (r.offset, &r.payload[..])).collect();
        assert_eq!(
            got,
            vec![(0, &b"{\"a\":1}"[..]), (2, b"{\"a\":2}"), (3, b"{\"a\":3}")]
        );
        source.seek(0, 2).unwrap();
        assert_eq!(source.poll(10, Duration::ZERO).unwrap().len(), 2);
    }
}
