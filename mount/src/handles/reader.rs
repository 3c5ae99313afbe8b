//! A value streamed to the kernel. Each open file's reads go, in the order
//! the kernel sent them, to a task of its own that keeps one stream from the
//! node and answers each read from it (a seek back starts the stream again).

use fuser::ReplyData;
use p3_objectspace::{object::Stat, SpaceError};
use tokio::{
    io::{AsyncReadExt, DuplexStream},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    client::{local, Node, Result},
    errno::errno,
};

/// Bytes buffered between the node's answer and the kernel's reads.
const PIPE_BYTES: usize = 1 << 20;
/// A forward seek shorter than this reads and drops the bytes in between
/// instead of asking for the value again.
const SKIP_LIMIT: u64 = 64 << 20;

/// One read the kernel asked for.
struct Read {
    offset: u64,
    size: usize,
    reply: ReplyData,
}

/// The reads of one open file, answered in order by its task; dropping it
/// (the file's release) ends the task and the stream.
pub struct Reads {
    queue: mpsc::UnboundedSender<Read>,
}

impl Reads {
    /// Reads of `path` (`NS/NAME`) through `node`; the stream starts with
    /// the first read.
    pub fn new(node: Node, path: String) -> Self {
        let (queue, mut reads) = mpsc::unbounded_channel::<Read>();
        let runtime = node.runtime().clone();
        runtime.spawn(async move {
            let mut reader = Reader::new(path);
            while let Some(read) = reads.recv().await {
                match reader.read(&node, read.offset, read.size).await {
                    Ok(bytes) => read.reply.data(&bytes),
                    Err(e) => read.reply.error(errno("read", &reader.path, &e)),
                }
            }
        });
        Self { queue }
    }

    /// Answers `reply` with up to `size` bytes at `offset` once the reads
    /// before it are answered.
    pub fn read(&self, offset: u64, size: usize, reply: ReplyData) {
        if let Err(mpsc::error::SendError(read)) = self.queue.send(Read {
            offset,
            size,
            reply,
        }) {
            read.reply.error(libc::EIO);
        }
    }
}

/// A value being streamed.
struct Reader {
    path: String,
    stream: Option<(DuplexStream, JoinHandle<Result<Stat>>)>,
    position: u64,
}

impl Reader {
    fn new(path: String) -> Self {
        Self {
            path,
            stream: None,
            position: 0,
        }
    }

    async fn start(&mut self, node: &Node) -> Result<()> {
        let mut space = node.connect().await?;
        let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
        let path = self.path.clone();
        let task = tokio::spawn(async move { space.get(&path, &mut writer, |_, _| {}).await });
        if let Some((_, old)) = self.stream.replace((reader, task)) {
            old.abort();
        }
        self.position = 0;
        Ok(())
    }

    /// Up to `size` bytes at `offset` (fewer only at the end of the value).
    async fn read(&mut self, node: &Node, offset: u64, size: usize) -> Result<Vec<u8>> {
        if self.stream.is_none() || offset < self.position || offset - self.position > SKIP_LIMIT {
            self.start(node).await?;
        }
        let Some((pipe, _)) = self.stream.as_mut() else {
            return Err(SpaceError::Unavailable("no stream".into()));
        };
        let (bytes, ended) = read_at(pipe, offset - self.position, size).await?;
        self.position = offset + bytes.len() as u64;
        if ended {
            // The stream ended: at the end of the value, or because it failed.
            if let Some((_, task)) = self.stream.take() {
                match task.await {
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

/// Drops `skip` bytes of `pipe`, then reads up to `size`; whether it ended.
async fn read_at(pipe: &mut DuplexStream, skip: u64, size: usize) -> Result<(Vec<u8>, bool)> {
    // Most reads follow the last one: only a seek forward needs this.
    let mut dropped = vec![0u8; skip.min(64 << 10) as usize];
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
    Ok((bytes, false))
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some((_, task)) = self.stream.take() {
            task.abort();
        }
    }
}
