//! A value streamed to the kernel. Each open file's reads go, in the order
//! the kernel sent them, to a task of its own that keeps one stream from the
//! node and answers each read from the frames as they arrived: a read inside
//! one frame is handed to the kernel straight from it, with no copy (a seek
//! back before the frame being read starts the stream again).

use fuser::ReplyData;
use p3_objectspace::SpaceError;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    client::{Node, Result},
    errno::errno,
};

/// Frames (1 MiB each) the node's answer runs ahead of the kernel's reads:
/// enough that the network and the kernel are busy at once.
const FRAMES_AHEAD: usize = 4;
/// A forward seek shorter than this drops the frames in between instead of
/// asking for the value again.
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
            let mut reader = Reader {
                node,
                path,
                stream: None,
            };
            while let Some(read) = reads.recv().await {
                if let Err(e) = reader
                    .answer(read.offset, read.size, &mut Some(read.reply))
                    .await
                {
                    // `answer` replies itself on success; the reply is still
                    // here only when it failed first.
                    tracing::debug!(path = %reader.path, "read failed: {e}");
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

/// The value of one open file, as far as it has been read.
struct Reader {
    node: Node,
    path: String,
    stream: Option<Stream>,
}

/// One get of the value: its frames in order, the current one kept.
struct Stream {
    frames: mpsc::Receiver<Result<Vec<u8>>>,
    task: JoinHandle<()>,
    /// The frame reads are answered from, and where it starts in the value.
    frame: Vec<u8>,
    start: u64,
    /// Every frame has arrived: `frame` is the value's last.
    ended: bool,
}

impl Stream {
    /// Where the bytes received so far end in the value.
    fn end(&self) -> u64 {
        self.start + self.frame.len() as u64
    }

    /// Moves to the next frame; false at the end of the value.
    async fn advance(&mut self) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        match self.frames.recv().await {
            Some(Ok(frame)) => {
                self.start = self.end();
                self.frame = frame;
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reader {
    /// Starts a get of the value; its frames are received ahead by a task.
    async fn start(&mut self) -> Result<&mut Stream> {
        let mut space = self.node.connect().await?;
        let (sender, frames) = mpsc::channel(FRAMES_AHEAD);
        let path = self.path.clone();
        let task = tokio::spawn(async move {
            let received = async {
                let mut incoming = space.get_incoming(&path).await?;
                while let Some(frame) = incoming.next().await? {
                    if sender.send(Ok(frame)).await.is_err() {
                        break; // the file was closed or seeks elsewhere
                    }
                }
                Ok::<_, SpaceError>(())
            };
            if let Err(e) = received.await {
                let _ = sender.send(Err(e)).await;
            }
        });
        Ok(self.stream.insert(Stream {
            frames,
            task,
            frame: Vec::new(),
            start: 0,
            ended: false,
        }))
    }

    /// Answers the read of up to `size` bytes at `offset` (fewer only at the
    /// end of the value). The reply is taken when it is sent, so on an error
    /// before that the caller still has it; `answer` sends the error itself.
    async fn answer(
        &mut self,
        offset: u64,
        size: usize,
        reply: &mut Option<ReplyData>,
    ) -> Result<()> {
        let result = self.send(offset, size, reply).await;
        if let (Err(e), Some(reply)) = (&result, reply.take()) {
            reply.error(errno("read", &self.path, e));
        }
        if result.is_err() {
            // A failed stream is not resumed: the next read starts again.
            self.stream = None;
        }
        result
    }

    async fn send(
        &mut self,
        offset: u64,
        size: usize,
        reply: &mut Option<ReplyData>,
    ) -> Result<()> {
        let stream = match self.stream.as_mut() {
            Some(s) if offset >= s.start && offset <= s.end() + SKIP_LIMIT => s,
            _ => self.start().await?,
        };
        while offset >= stream.end() {
            if !stream.advance().await? {
                break;
            }
        }
        let from = offset
            .saturating_sub(stream.start)
            .min(stream.frame.len() as u64) as usize;
        let upto = from.saturating_add(size);
        if upto <= stream.frame.len() || stream.ended {
            // Inside the frame (or the rest of the value): no copy.
            let bytes = &stream.frame[from..upto.min(stream.frame.len())];
            if let Some(reply) = reply.take() {
                reply.data(bytes);
            }
            return Ok(());
        }
        // Across frames: gathered into one answer.
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&stream.frame[from..]);
        while bytes.len() < size && stream.advance().await? {
            let take = (size - bytes.len()).min(stream.frame.len());
            bytes.extend_from_slice(&stream.frame[..take]);
        }
        if let Some(reply) = reply.take() {
            reply.data(&bytes);
        }
        Ok(())
    }
}
