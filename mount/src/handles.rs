//! Open files. A file opened for reading streams its object from the node as
//! the kernel asks for it (a seek back starts the stream again); a file opened
//! for writing is a spool file on local disk that becomes the object's next
//! version, whole, when the file is flushed (closed) or fsync'd.

use std::{fs::File, os::unix::fs::FileExt};

use p3_objectspace::{object::Stat, SpaceError};
use tokio::{
    io::{AsyncReadExt, DuplexStream},
    task::JoinHandle,
};

use crate::{
    client::{local, Client, Result},
    posix::Change,
};

/// Bytes buffered between the node's answer and the kernel's reads.
const PIPE_BYTES: usize = 1 << 20;
/// A forward seek shorter than this reads and drops the bytes in between
/// instead of asking for the value again.
const SKIP_LIMIT: u64 = 64 << 20;

/// A value being streamed to the kernel.
pub struct Reader {
    path: String,
    stream: Option<(DuplexStream, JoinHandle<Result<Stat>>)>,
    position: u64,
}

impl Reader {
    /// A reader of `path` (`NS/NAME`); the stream starts with the first read.
    pub fn new(path: String) -> Self {
        Self {
            path,
            stream: None,
            position: 0,
        }
    }

    fn start(&mut self, client: &Client) -> Result<()> {
        let mut space = client.connect()?;
        let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
        let path = self.path.clone();
        let task = client
            .runtime()
            .spawn(async move { space.get(&path, &mut writer, |_, _| {}).await });
        if let Some((_, old)) = self.stream.replace((reader, task)) {
            old.abort();
        }
        self.position = 0;
        Ok(())
    }

    /// Up to `size` bytes at `offset` (fewer only at the end of the value).
    pub fn read(&mut self, client: &Client, offset: u64, size: usize) -> Result<Vec<u8>> {
        if self.stream.is_none() || offset < self.position || offset - self.position > SKIP_LIMIT {
            self.start(client)?;
        }
        let Some((pipe, _)) = self.stream.as_mut() else {
            return Err(SpaceError::Unavailable("no stream".into()));
        };
        let skip = offset - self.position;
        let (bytes, ended) = client.runtime().block_on(async {
            let mut dropped = vec![0u8; 64 << 10];
            let mut left = skip;
            while left > 0 {
                let want = left.min(dropped.len() as u64) as usize;
                let n = pipe.read(&mut dropped[..want]).await.map_err(local)?;
                if n == 0 {
                    return Ok((Vec::new(), true));
                }
                left -= n as u64;
            }
            let mut bytes = vec![0u8; size];
            let mut filled = 0;
            while filled < size {
                let n = pipe.read(&mut bytes[filled..]).await.map_err(local)?;
                if n == 0 {
                    bytes.truncate(filled);
                    return Ok((bytes, true));
                }
                filled += n;
            }
            Ok::<_, SpaceError>((bytes, false))
        })?;
        self.position = offset + bytes.len() as u64;
        if ended {
            // The stream ended: at the end of the value, or because it failed.
            if let Some((_, task)) = self.stream.take() {
                match client.runtime().block_on(task) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(SpaceError::Unavailable(format!("read task: {e}"))),
                }
            }
            // Later reads at or past the end start again (and find the end).
            self.position = u64::MAX;
        }
        Ok(bytes)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some((_, task)) = self.stream.take() {
            task.abort();
        }
    }
}

/// A file being written: its bytes on local disk until they are sent.
pub struct Spool {
    /// The bytes.
    pub file: File,
    /// Changed since it was last sent.
    pub dirty: bool,
    /// Written to (or truncated) since it was last sent: a close sends it
    /// then. A new file nobody wrote to yet is sent only when its last
    /// descriptor closes, so a shell's `> f` (open, dup, close, write, close)
    /// never shows an empty version first.
    pub written: bool,
    /// The version it started from (its type and metadata are kept).
    pub base: Option<Stat>,
    /// Whether its bytes are new content rather than a copy of `base`'s:
    /// then the version it becomes gets its own modification time.
    pub new_content: bool,
    /// Attributes set while it is open, applied when it is sent.
    pub posix: Change,
}

impl Spool {
    /// An empty spool in the system's temporary directory.
    pub fn empty(base: Option<Stat>) -> Result<Self> {
        Ok(Self {
            file: tempfile::tempfile().map_err(local)?,
            dirty: true,
            written: false,
            base,
            new_content: true,
            posix: Change::default(),
        })
    }

    /// Bytes at `offset`.
    pub fn read(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            let n = self
                .file
                .read_at(&mut bytes[filled..], offset + filled as u64)
                .map_err(local)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        bytes.truncate(filled);
        Ok(bytes)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(local)?;
        self.dirty = true;
        self.written = true;
        self.new_content = true;
        Ok(())
    }

    /// Cuts or extends to `size` bytes.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        self.file.set_len(size).map_err(local)?;
        self.dirty = true;
        self.written = true;
        self.new_content = true;
        Ok(())
    }

    /// Its size now.
    pub fn size(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(local)?.len())
    }
}

/// An open file.
pub enum Handle {
    /// Opened read-only.
    Read(Reader),
    /// Opened for writing (reads see what was written).
    Write(Spool),
}
