//! In-process connections for the simulator (`p3sim`): libp2p's memory
//! transport, with every byte sent over it counted so a simulation can say
//! what a scenario cost on the wire. A node reaches `/memory/PORT` addresses
//! only in the process that listens on them, so a real node, which never
//! listens on one, gains nothing it could be dialled on.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::{
    transport::{map::Map, memory::Channel, MemoryTransport},
    ConnectedPoint, Transport,
};

/// Bytes written to every in-process connection of this process, framing
/// and encryption included.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Bytes sent so far over in-process connections (all nodes of the process).
pub fn bytes_sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// The memory transport, its connections counted.
pub(crate) type Memory = Map<MemoryTransport, fn(Channel<Vec<u8>>, ConnectedPoint) -> Counted>;

/// A memory transport whose connections count what they send.
pub(crate) fn transport() -> Memory {
    MemoryTransport::default().map(count as fn(_, _) -> _)
}

fn count(channel: Channel<Vec<u8>>, _: ConnectedPoint) -> Counted {
    Counted(channel)
}

/// An in-process connection that counts what is written to it.
pub(crate) struct Counted(Channel<Vec<u8>>);

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.0).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            SENT.fetch_add(n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
