//! A value streamed to the kernel. Each open file's reads go, in the order
//! the kernel sent them, to a task of its own that keeps one stream from the
//! node and answers each read from the frames as they arrived: a read inside
//! one frame is handed to the kernel straight from it, with no copy. The
//! last few frames are kept, for reads that arrive out of order; a seek back
//! before them starts the stream again.

use std::{borrow::Cow, collections::VecDeque};

use fuser::ReplyData;
use p3_objectspace::{buffers, SpaceError};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    client::{Node, Result},
    errno::errno,
};

/// Frames (1 MiB each) the node's answer runs ahead of the kernel's reads:
/// enough that the network and the kernel are busy at once.
const FRAMES_AHEAD: usize = 4;
/// Frames kept behind the newest: the kernel's readahead sends several
/// reads at once and they may arrive out of order by as many megabytes as it
/// reads ahead (with `read_ahead_kb` at 4 MiB, by ten), and starting the
/// value again for each would read it many times over.
const FRAMES_KEPT: usize = 16;
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
                reader.answer(read.offset, read.size, read.reply).await;
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

/// One get of the value: its frames in order, the last few kept.
struct Stream {
    incoming: mpsc::Receiver<Result<Vec<u8>>>,
    task: JoinHandle<()>,
    /// The frames reads are answered from, and where the first starts in
    /// the value.
    frames: VecDeque<Vec<u8>>,
    start: u64,
    /// Where the last frame ends.
    end: u64,
    /// Every frame has arrived.
    ended: bool,
}

impl Stream {
    /// Receives the next frame; false at the end of the value. Frames
    /// wholly before `keep_from` beyond the newest [`FRAMES_KEPT`] are dropped.
    async fn advance(&mut self, keep_from: u64) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        match self.incoming.recv().await {
            Some(Ok(frame)) => {
                self.end += frame.len() as u64;
                self.frames.push_back(frame);
                while self.frames.len() > FRAMES_KEPT {
                    let first = self.frames[0].len() as u64;
                    if self.start + first > keep_from {
                        break;
                    }
                    self.start += first;
                    if let Some(frame) = self.frames.pop_front() {
                        buffers::give_back(frame);
                    }
                }
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// The bytes from `offset` up to `upto` (or the value's end), without a
    /// copy when one frame holds them all; the frames up to `upto` must have
    /// been received.
    fn bytes(&self, offset: u64, upto: u64) -> Cow<'_, [u8]> {
        let mut at = self.start;
        let mut parts = self.frames.iter().filter_map(|frame| {
            let (from, to) = (at, at + frame.len() as u64);
            at = to;
            let (a, b) = (offset.max(from), upto.min(to));
            (a < b).then(|| &frame[(a - from) as usize..(b - from) as usize])
        });
        let Some(first) = parts.next() else {
            return Cow::Borrowed(&[]);
        };
        match parts.next() {
            None => Cow::Borrowed(first),
            Some(second) => {
                let mut joined = Vec::with_capacity((upto - offset) as usize);
                joined.extend_from_slice(first);
                joined.extend_from_slice(second);
                parts.for_each(|part| joined.extend_from_slice(part));
                Cow::Owned(joined)
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
        self.frames.drain(..).for_each(buffers::give_back);
    }
}

impl Reader {
    /// Starts a get of the value; its frames are received ahead by a task.
    async fn start(node: &Node, path: &str) -> Result<Stream> {
        let mut space = node.connect().await?;
        let (sender, incoming) = mpsc::channel(FRAMES_AHEAD);
        let path = path.to_owned();
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
        Ok(Stream {
            incoming,
            task,
            frames: VecDeque::new(),
            start: 0,
            end: 0,
            ended: false,
        })
    }

    /// Answers the read of up to `size` bytes at `offset` (fewer only at the
    /// end of the value).
    async fn answer(&mut self, offset: u64, size: usize, reply: ReplyData) {
        let failed = match self.bytes_at(offset, size).await {
            Ok(bytes) => {
                reply.data(&bytes);
                None
            }
            Err(e) => Some((e, reply)),
        };
        if let Some((e, reply)) = failed {
            tracing::debug!(path = %self.path, "read failed: {e}");
            reply.error(errno("read", &self.path, &e));
            // A failed stream is not resumed: the next read starts again.
            self.stream = None;
        }
    }

    /// The bytes of the value from `offset`, up to `size` of them.
    async fn bytes_at(&mut self, offset: u64, size: usize) -> Result<Cow<'_, [u8]>> {
        let stream = match self.stream.take() {
            Some(s) if offset >= s.start && offset <= s.end + SKIP_LIMIT => self.stream.insert(s),
            old => {
                let at = old.as_ref().map(|s| (s.start, s.end));
                tracing::debug!(path = %self.path, offset, size, ?at, "read starts a stream");
                drop(old);
                self.stream
                    .insert(Self::start(&self.node, &self.path).await?)
            }
        };
        let upto = offset.saturating_add(size as u64);
        while stream.end < upto && stream.advance(offset).await? {}
        Ok(stream.bytes(offset, upto))
    }
}
