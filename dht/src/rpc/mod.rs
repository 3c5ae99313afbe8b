//! Requests to peers over one long-lived stream per peer and direction, many
//! in flight at once.
//!
//! libp2p's request-response opens and negotiates a new substream for every
//! request and routes each request and answer through the swarm task; for the
//! small, frequent messages of the object space (a write is a request to the
//! primary and one to each replica) that setup costs more than the message.
//! Here a node opens one stream of [`crate::REQUEST_STREAM_PROTOCOL`] to each peer it asks, and
//! frames requests on it with ids; the peer answers on the same stream in any
//! order. A frame sent while the stream is free is written by its sender at
//! once; frames that queue while a write is in progress go out in one write
//! (`frames`).
//!
//! A stream is used only after the accepting side said it took it (a one-byte
//! greeting), because libp2p-stream drops inbound streams that arrive in a
//! burst; a request written to a stream was therefore delivered to a node that
//! read it, and a stream that breaks afterwards leaves the outcome unknown, as
//! with any connection. Peers that do not speak the protocol are asked through
//! request-response instead ([`crate::Node::request`]).
//!
//! With on-demand connections ([`crate::Connections::OnDemand`]) a stream
//! that carried no request for the idle time is closed, so that the
//! connection under it can close too.
//!
//! Must never: buffer more than the configured limit for one frame from a
//! peer, or wait on a peer without a deadline.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use futures::{io::ReadHalf, AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::{
    node::{InboundRequest, ReplyTo},
    DhtError,
};

mod frames;

pub use frames::read_frames;
use frames::{read_frame, write_frames, Frames, REFUSED, REQUEST, RESPONSE};

/// What the accepting side writes first: the stream is in use.
const GREETING: u8 = 0x70;
/// Attempts to open a stream the peer takes.
const OPEN_TRIES: usize = 3;
/// How long opening a stream and its greeting may take: a round trip on a
/// live connection (or a dial). It is bounded apart from a request's own
/// deadline, which may be an hour: every request to the peer waits behind
/// an open, so a stream the peer never takes up must fail soon, and the
/// request goes by request-response instead.
const OPEN_DEADLINE: Duration = Duration::from_secs(10);

type Answer = Result<Vec<u8>, String>;

/// The requesting side of one stream.
struct Outbound {
    frames: Frames,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next: AtomicU64,
    alive: AtomicBool,
    /// When the stream was opened.
    opened: Instant,
    /// When a request last took the stream, in milliseconds after `opened`
    /// (an atomic: every request stamps it, so no lock on that path).
    used_ms: AtomicU64,
}

/// The stream to one peer, if open; held while a stream is opened, handed
/// out or closed for being idle, so those never cross.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Outbound>>>>;

impl Outbound {
    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.used_ms.store(now, Ordering::Relaxed);
    }

    /// Whether no request took the stream for `idle` and none waits on it.
    fn idle_for(&self, idle: Duration) -> bool {
        let used = Duration::from_millis(self.used_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(used) >= idle
            && self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// Fails every request waiting for an answer on this stream.
    fn close(&self, reason: &str) {
        self.alive.store(false, Ordering::SeqCst);
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, waiter) in pending {
            let _ = waiter.send(Err(reason.to_owned()));
        }
    }
}

/// Removes a request's waiter if the caller gives up before the answer.
struct Waiting<'a> {
    conn: &'a Outbound,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.conn
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Why a request could not use a stream.
pub(crate) enum Failed {
    /// No stream could be opened (the peer may not speak the protocol): ask
    /// another way. The request comes back.
    NoStream {
        /// Why.
        reason: String,
        /// The request's body.
        body: Vec<u8>,
    },
    /// The request was sent and then failed.
    Sent(DhtError),
}

/// Request streams of one node and protocol.
pub(crate) struct Rpc {
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    streams: Arc<Mutex<HashMap<PeerId, Slot>>>,
    max_request: u64,
    max_response: u64,
    timeout: Duration,
    /// Streams unused this long are closed; `None`: kept.
    idle: Option<Duration>,
}

impl Rpc {
    /// Request streams of `protocol` over `control`, within the given limits,
    /// each closed after `idle` without a request if that is set.
    pub(crate) fn new(
        control: libp2p_stream::Control,
        protocol: StreamProtocol,
        (max_request, max_response): (u64, u64),
        timeout: Duration,
        idle: Option<Duration>,
    ) -> Self {
        Rpc {
            control,
            protocol,
            streams: Arc::default(),
            max_request,
            max_response,
            timeout,
            idle,
        }
    }

    /// Sends `body` to `peer` and waits for its answer.
    pub(crate) async fn request(&self, peer: PeerId, body: Vec<u8>) -> Result<Vec<u8>, Failed> {
        self.request_within(peer, body, self.timeout).await
    }

    /// Sends `body` to `peer` and waits at most `timeout` for its answer.
    pub(crate) async fn request_within(
        &self,
        peer: PeerId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Failed> {
        if body.len() as u64 > self.max_request {
            return Err(Failed::Sent(DhtError::Request {
                peer,
                reason: format!("request larger than the {}-byte limit", self.max_request),
            }));
        }
        let conn = match self.stream_to(peer).await {
            Ok(conn) => conn,
            Err(reason) => return Err(Failed::NoStream { reason, body }),
        };
        let id = conn.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let _waiting = Waiting { conn: &conn, id };
        let failed = |reason: String| Failed::Sent(DhtError::Request { peer, reason });
        let broken = conn.clone();
        let unsent = conn.frames.write_now((REQUEST, id, body), move |e| {
            broken.close(&format!("writing to the peer failed: {e}"))
        });
        if let Some(frame) = unsent {
            if conn.frames.queue.send(frame).await.is_err() {
                return Err(failed("the stream to the peer closed".into()));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(reason))) => Err(failed(reason)),
            Ok(Err(_)) => Err(failed("the stream to the peer closed".into())),
            Err(_) => Err(failed(format!("no answer within {timeout:?}"))),
        }
    }

    /// The live stream to `peer`, opened if needed.
    async fn stream_to(&self, peer: PeerId) -> Result<Arc<Outbound>, String> {
        let shared = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_default()
            .clone();
        let mut slot = shared.clone().lock_owned().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.alive.load(Ordering::SeqCst)) {
            conn.touch();
            return Ok(conn.clone());
        }
        // Opened by a task of its own, which fills the slot: a caller may
        // give up first (openraft allows a heartbeat 150 ms), and a loaded
        // peer that takes longer to greet would otherwise never be reached,
        // every caller cancelling the opening it started.
        let opener = Opener {
            control: self.control.clone(),
            protocol: self.protocol.clone(),
            max_response: self.max_response,
        };
        let streams = Arc::downgrade(&self.streams);
        let idle = self.idle;
        let opening = tokio::spawn(async move {
            let mut last = String::new();
            for _ in 0..OPEN_TRIES {
                match opener.open(peer).await {
                    Ok(conn) => {
                        *slot = Some(conn.clone());
                        if let Some(idle) = idle {
                            let conn = Arc::downgrade(&conn);
                            tokio::spawn(close_when_idle(streams, peer, shared, conn, idle));
                        }
                        return Ok(conn);
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        opening
            .await
            .unwrap_or_else(|e| Err(format!("opening a stream failed: {e}")))
    }
}

/// What opening a request stream needs.
struct Opener {
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    max_response: u64,
}

impl Opener {
    async fn open(&self, peer: PeerId) -> Result<Arc<Outbound>, String> {
        let mut control = self.control.clone();
        let open = control.open_stream(peer, self.protocol.clone());
        let mut stream = match tokio::time::timeout(OPEN_DEADLINE, open).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("opening a stream timed out".into()),
        };
        let mut greeting = [0u8; 1];
        match tokio::time::timeout(OPEN_DEADLINE, stream.read_exact(&mut greeting)).await {
            Ok(Ok(())) if greeting[0] == GREETING => {}
            Ok(Ok(())) => return Err("the peer sent no greeting".into()),
            Ok(Err(e)) => return Err(format!("the peer dropped the stream: {e}")),
            Err(_) => return Err("the peer sent no greeting in time".into()),
        }
        let (read, write) = stream.split();
        let (frames, queue) = Frames::new(write);
        let conn = Arc::new(Outbound {
            frames: frames.clone(),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            opened: Instant::now(),
            used_ms: AtomicU64::new(0),
        });
        // Weak: the writer runs until the queue closes, which is when the
        // last handle on the stream goes; a strong one would keep it open.
        let writer = Arc::downgrade(&conn);
        tokio::spawn(async move {
            if let Err(e) = write_frames(frames, queue).await {
                if let Some(conn) = writer.upgrade() {
                    conn.close(&format!("writing to the peer failed: {e}"));
                }
            }
        });
        let reader = conn.clone();
        let max = self.max_response;
        tokio::spawn(async move {
            let reason = match read_answers(read, &reader, max).await {
                Ok(()) => "the peer closed the stream".to_owned(),
                Err(e) => e,
            };
            reader.close(&reason);
        });
        Ok(conn)
    }
}

/// Closes the stream `conn` to `peer` once it has carried no request for
/// `idle`: it leaves the slot (no request takes it any more), its writing
/// side is closed, the peer ends its side, and when the last handle goes the
/// stream is gone and libp2p may close the connection as idle.
async fn close_when_idle(
    streams: Weak<Mutex<HashMap<PeerId, Slot>>>,
    peer: PeerId,
    shared: Slot,
    conn: Weak<Outbound>,
    idle: Duration,
) {
    // Checked at a quarter of the idle time: a stream lives up to 1.25 times it.
    let every = (idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let mut slot = shared.lock().await;
        let Some(open) = conn.upgrade() else { return };
        if !open.alive.load(Ordering::SeqCst) {
            return;
        }
        if !open.idle_for(idle) {
            continue;
        }
        open.close(&format!("closed after {idle:?} without a request"));
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &open)) {
            *slot = None;
        }
        drop(slot);
        if let Some(streams) = streams.upgrade() {
            let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
            if streams.get(&peer).is_some_and(|s| Arc::ptr_eq(s, &shared)) {
                streams.remove(&peer);
            }
        }
        open.frames.close().await;
        return;
    }
}

/// Serves inbound request streams: hands each request to `requests` and
/// writes the answers back.
pub(crate) async fn serve(
    mut incoming: libp2p_stream::IncomingStreams,
    requests: mpsc::Sender<InboundRequest>,
    max_request: u64,
) {
    while let Some((peer, stream)) = incoming.next().await {
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(peer, stream, requests, max_request).await {
                tracing::debug!(%peer, error = %e, "request stream ended");
            }
        });
    }
}

async fn serve_stream(
    peer: PeerId,
    mut stream: Stream,
    requests: mpsc::Sender<InboundRequest>,
    max_request: u64,
) -> Result<(), String> {
    stream
        .write_all(&[GREETING])
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let (mut read, write) = stream.split();
    let (frames, queue) = Frames::new(write);
    let writer = tokio::spawn(write_frames(frames.clone(), queue));
    let result = loop {
        let (kind, id, body) = match read_frame(&mut read, max_request).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if kind != REQUEST {
            break Err(format!("unexpected frame kind {kind} on a request stream"));
        }
        let reply = ReplyTo::Stream(Responder {
            id,
            frames: Some(frames.clone()),
        });
        let inbound = InboundRequest { peer, body, reply };
        // Waiting here holds back only this peer's stream: the node's queue
        // is full because it is busy, and the peer should slow down, not fail.
        // A request the node stopped taking is refused as it is dropped.
        let _ = requests.send(inbound).await;
    };
    drop(frames);
    // Answers still being worked out keep the writer going until they are sent.
    let _ = writer.await;
    result
}

/// Where the answer to request `id` of an inbound stream goes: onto the
/// stream, by whoever answers, without a task between them (see
/// [`Frames::write_now`]). Dropped unanswered, it refuses the request so the
/// peer's caller fails instead of waiting for its deadline. Each holds the
/// writer's queue open, so the writer lives until every request taken from
/// the stream is answered.
pub(crate) struct Responder {
    id: u64,
    frames: Option<Frames>,
}

impl Responder {
    /// Queues the answer `body`.
    pub(crate) fn send(mut self, body: Vec<u8>) {
        self.queue(RESPONSE, body);
    }

    fn queue(&mut self, kind: u8, body: Vec<u8>) {
        let Some(frames) = self.frames.take() else {
            return;
        };
        // A failed write ends the stream; its reader sees that.
        let Some(frame) = frames.write_now((kind, self.id, body), |_| {}) else {
            return;
        };
        let frames = frames.queue;
        match frames.try_send(frame) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            // A full queue (a thousand answers waiting for the socket) waits
            // its turn off the answering task; outside a runtime (a node
            // shutting down) the answer has nowhere to go anyway.
            Err(mpsc::error::TrySendError::Full(frame)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = frames.send(frame).await;
                    });
                }
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.queue(REFUSED, Vec::new());
    }
}

async fn read_answers(mut read: ReadHalf<Stream>, conn: &Outbound, max: u64) -> Result<(), String> {
    while let Some((kind, id, body)) = read_frame(&mut read, max).await? {
        let answer = match kind {
            RESPONSE => Ok(body),
            REFUSED => Err("the peer dropped the request without answering".to_owned()),
            other => return Err(format!("unexpected frame kind {other} on an answer stream")),
        };
        let waiter = conn
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(answer);
        }
    }
    Ok(())
}
