//! Offline repair of a damaged log: each damaged frame becomes a placeholder record, its
//! bytes kept in a side file.

use super::*;

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
