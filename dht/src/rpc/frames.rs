//! The framing of request streams: a frame is a kind, a request id and a
//! length-prefixed body; frames are read within a size limit and written
//! either at once by whoever has one (when the stream is free) or gathered
//! by the stream's writer task.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{io::WriteHalf, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::Stream;
use tokio::sync::mpsc;

/// A request.
pub(super) const REQUEST: u8 = 0;
/// An answer.
pub(super) const RESPONSE: u8 = 1;
/// The receiver dropped the request without an answer.
pub(super) const REFUSED: u8 = 2;
/// Frame header: kind, id, body length.
const HEADER: usize = 1 + 8 + 4;
/// Frames queued per stream before senders wait.
const QUEUE: usize = 1024;
/// Bytes gathered into one write at most.
const BATCH_BYTES: usize = 1 << 20;

/// Kind, request id, body.
pub(super) type Frame = (u8, u64, Vec<u8>);

/// The frames (kind, request id, body) in `bytes` as a node reads them from a
/// request stream with a per-frame limit of `max` bytes, up to the first
/// error: the entry point for fuzzing the stream's framing without a peer.
pub fn read_frames(bytes: &[u8], max: u64) -> Result<Vec<(u8, u64, Vec<u8>)>, String> {
    futures::executor::block_on(async {
        let mut read = futures::io::Cursor::new(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(&mut read, max).await? {
            frames.push(frame);
        }
        Ok(frames)
    })
}

/// The next frame, `None` at a clean end of the stream.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    read: &mut R,
    max: u64,
) -> Result<Option<Frame>, String> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match read.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("the stream ended inside a frame".into()),
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let kind = header[0];
    let id = u64::from_be_bytes(header[1..9].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(header[9..13].try_into().unwrap_or_default()) as u64;
    if len > max {
        return Err(format!(
            "a frame of {len} bytes is over the {max}-byte limit"
        ));
    }
    let mut body = vec![0u8; len as usize];
    read.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some((kind, id, body)))
}

/// The sending side of one stream: its write half, shared by the stream's
/// writer task and whoever has a frame to send, and the writer's queue.
#[derive(Clone)]
pub(crate) struct Frames {
    /// The stream's write half.
    half: Arc<tokio::sync::Mutex<WriteHalf<Stream>>>,
    /// The writer task's queue.
    pub(super) queue: mpsc::Sender<Frame>,
}

impl Frames {
    /// The sending side of a stream, and the queue its writer task serves.
    pub(super) fn new(half: WriteHalf<Stream>) -> (Self, mpsc::Receiver<Frame>) {
        let (queue, frames) = mpsc::channel(QUEUE);
        let half = Arc::new(tokio::sync::Mutex::new(half));
        (Frames { half, queue }, frames)
    }

    /// Closes the writing side (the peer reads the stream's end), after any
    /// frame being written.
    pub(super) async fn close(&self) {
        let _ = self.half.lock().await.close().await;
    }

    /// Writes `frame` here and now if the stream is free, instead of waking
    /// the writer task: a small message's write costs less than a thread
    /// wakeup, and at one request at a time every wakeup is on the critical
    /// path. Returns the frame if the stream is busy (the caller queues it,
    /// and the writer gathers what queued into one write). A frame the
    /// stream takes only in part is finished by a task holding the stream,
    /// so frames never interleave and a caller that gives up cannot leave
    /// half a frame behind; `failed` hears of a write that fails.
    pub(super) fn write_now(
        &self,
        frame: Frame,
        failed: impl FnOnce(String) + Send + 'static,
    ) -> Option<Frame> {
        let Ok(mut half) = self.half.clone().try_lock_owned() else {
            return Some(frame);
        };
        let mut buf = Vec::with_capacity(HEADER + frame.2.len());
        push_frame(&mut buf, frame);
        // Polled once without a waker: whatever would wait is left to the
        // task below, which polls again with its own.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut written = 0;
        while written < buf.len() {
            match Pin::new(&mut *half).poll_write(&mut cx, &buf[written..]) {
                Poll::Ready(Ok(0)) => {
                    failed("the stream is closed".into());
                    return None;
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => {
                    failed(e.to_string());
                    return None;
                }
                Poll::Pending => break,
            }
        }
        if written == buf.len() {
            match Pin::new(&mut *half).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => return None,
                Poll::Ready(Err(e)) => {
                    failed(e.to_string());
                    return None;
                }
                Poll::Pending => {}
            }
        }
        // Outside a runtime the node is going down: the stream goes with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let finished = async {
                    half.write_all(&buf[written..]).await?;
                    half.flush().await
                };
                if let Err(e) = finished.await {
                    failed(e.to_string());
                }
            });
        }
        None
    }
}

/// Writes queued frames, as many as are waiting in one write, until the
/// queue closes.
pub(super) async fn write_frames(
    frames: Frames,
    mut queue: mpsc::Receiver<Frame>,
) -> std::io::Result<()> {
    // Holding the queue's sender would keep the queue open for ever (and
    // `..` would only drop it when this function returns).
    let Frames {
        half,
        queue: sender,
    } = frames;
    drop(sender);
    let mut buf = Vec::new();
    while let Some(frame) = queue.recv().await {
        push_frame(&mut buf, frame);
        while buf.len() < BATCH_BYTES {
            match queue.try_recv() {
                Ok(frame) => push_frame(&mut buf, frame),
                Err(_) => break,
            }
        }
        let mut write = half.lock().await;
        write.write_all(&buf).await?;
        write.flush().await?;
        buf.clear();
    }
    let mut write = half.lock().await;
    write.close().await
}

fn push_frame(buf: &mut Vec<u8>, (kind, id, body): Frame) {
    buf.push(kind);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
}
