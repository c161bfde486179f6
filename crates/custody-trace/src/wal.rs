//! The write-ahead log: numbered segment files of CRC-framed records.
//!
//! A frame is `len: u32 LE ‖ crc32(payload): u32 LE ‖ payload`. One
//! [`Wal::append`] writes all its frames with one write and makes them durable
//! with one `fdatasync`, so a group of batches costs one fsync; the caller
//! acknowledges only after it returns. On open, every segment is read back: a
//! torn frame at the end of the last segment (a crash in the middle of an
//! append that was never acknowledged) is cut off; a bad frame anywhere else is
//! damage to acknowledged data, so that segment is set aside under a new name,
//! its readable prefix is replayed, and the damage is reported, never hidden.
//!
//! Segments are released (deleted) once everything in them is stored elsewhere.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The largest payload a frame may carry; a length above it is damage.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024 * 1024;
const HEADER: usize = 8;
const SUFFIX: &str = ".wal";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("a frame of {0} bytes is larger than the limit of {MAX_FRAME_PAYLOAD}")]
    FrameTooLarge(usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.display().to_string(), source }
}

/// One frame read back on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub segment: u64,
    pub payload: Vec<u8>,
}

/// What opening found besides the frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn, never-acknowledged frame cut from the end of the log.
    pub torn_bytes: u64,
    /// Segments damaged before their end: (the copy kept for inspection, offset of the damage).
    pub damaged: Vec<(PathBuf, u64)>,
}

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    current: File,
    current_no: u64,
    current_len: u64,
}

impl Wal {
    /// Opens the log in `dir` (creating it), replays every segment, and returns
    /// the log ready for appends with the frames it holds, oldest first. A new
    /// segment starts once the current one reaches `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Vec<Frame>, Recovery), WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = list_segments(dir)?;
        let mut frames = Vec::new();
        let mut recovery = Recovery::default();
        let mut last: Option<(u64, u64)> = None; // (segment, valid length)
        for (i, &no) in segments.iter().enumerate() {
            let path = segment_path(dir, no);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let (payloads, valid) = read_frames(&bytes);
            frames.extend(payloads.into_iter().map(|payload| Frame { segment: no, payload }));
            let is_last = i + 1 == segments.len();
            if valid < bytes.len() as u64 {
                if is_last {
                    recovery.torn_bytes = bytes.len() as u64 - valid;
                } else {
                    // Keep a copy of the whole segment for inspection; the segment
                    // itself keeps its readable prefix, which every later replay
                    // reads again.
                    let aside = path.with_extension(format!("wal.damaged-at-{valid}"));
                    std::fs::copy(&path, &aside).map_err(io(&path))?;
                    tracing::error!(segment = %aside.display(), offset = valid, "write-ahead log segment damaged; copy kept");
                    recovery.damaged.push((aside, valid));
                }
                let file = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                file.set_len(valid).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
            }
            if is_last {
                last = Some((no, valid));
            }
        }
        let (current_no, current_len) = last.unwrap_or((1, 0));
        let path = segment_path(dir, current_no);
        let mut current = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        current.seek(SeekFrom::End(0)).map_err(io(&path))?;
        if last.is_none() {
            sync_dir(dir)?;
        }
        let wal =
            Self { dir: dir.to_path_buf(), segment_bytes: segment_bytes.max(1), current, current_no, current_len };
        Ok((wal, frames, recovery))
    }

    /// Appends payloads as frames and makes them durable with one fsync. Returns
    /// the segment they are in.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<u64, WalError> {
        if self.current_len >= self.segment_bytes {
            self.rotate()?;
        }
        let mut buffer = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
        for payload in payloads {
            if payload.len() > MAX_FRAME_PAYLOAD {
                return Err(WalError::FrameTooLarge(payload.len()));
            }
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            buffer.extend_from_slice(payload);
        }
        let path = segment_path(&self.dir, self.current_no);
        let result = self.current.write_all(&buffer).and_then(|()| self.current.sync_data());
        if let Err(source) = result {
            // Whatever part reached the file is an unacknowledged tail: cut it, so
            // the next append does not land behind a torn frame.
            let _ = self.current.set_len(self.current_len);
            return Err(WalError::Io { path: path.display().to_string(), source });
        }
        self.current_len += buffer.len() as u64;
        Ok(self.current_no)
    }

    /// Closes the current segment and starts the next; returns the closed one.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        let closed = self.current_no;
        let path = segment_path(&self.dir, closed + 1);
        self.current = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        self.current_no = closed + 1;
        self.current_len = 0;
        Ok(closed)
    }

    /// The segment appends go to now.
    pub fn current_segment(&self) -> u64 {
        self.current_no
    }

    /// Deletes every closed segment up to and including `segment`: their frames
    /// are stored elsewhere. The current segment is never deleted.
    pub fn release_through(&mut self, segment: u64) -> Result<(), WalError> {
        for no in list_segments(&self.dir)? {
            if no <= segment && no < self.current_no {
                let path = segment_path(&self.dir, no);
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        sync_dir(&self.dir)
    }

    /// Bytes in the log's segments on disk.
    pub fn disk_bytes(&self) -> Result<u64, WalError> {
        list_segments(&self.dir)?
            .into_iter()
            .map(|no| {
                let path = segment_path(&self.dir, no);
                std::fs::metadata(&path).map(|m| m.len()).map_err(io(&path))
            })
            .sum()
    }
}

fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}{SUFFIX}"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)).and_then(|n| n.parse().ok()) else {
            continue;
        };
        numbers.push(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The whole frames at the start of `bytes`, and how many bytes they span.
fn read_frames(bytes: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut frames = Vec::new();
    let mut reader = bytes;
    let mut valid = 0u64;
    loop {
        let mut header = [0u8; HEADER];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_FRAME_PAYLOAD || reader.len() < len {
            break;
        }
        let (payload, rest) = reader.split_at(len);
        if crc32fast::hash(payload) != crc {
            break;
        }
        frames.push(payload.to_vec());
        reader = rest;
        valid += (HEADER + len) as u64;
    }
    (frames, valid)
}

/// Makes a created or removed file name durable.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
