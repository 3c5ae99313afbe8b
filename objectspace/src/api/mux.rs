//! Many conversations with the node over one TCP connection: after the
//! hello, both ends speak yamux (the multiplexer libp2p uses), and each
//! [`Channel`] is one yamux stream carrying the same frames a whole
//! connection used to carry. A client opens a channel per concurrent
//! request instead of a connection with its own handshake.

use std::{
    collections::VecDeque,
    future::{poll_fn, Future},
    task::Poll,
};

use futures::io::{BufReader, BufWriter};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot},
};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// One conversation: read and written with [`super::read_frame`] and
/// [`super::write_frame`].
pub type Channel = Compat<yamux::Stream>;

type Reply = oneshot::Sender<std::io::Result<Channel>>;

/// Streams a connection holds open at once, on either end.
const MAX_CHANNELS: usize = 256;

/// Bytes of a stream sent in one yamux frame: values travel in 1 MiB data
/// frames, and small yamux frames would cost a wakeup each.
const SPLIT_SEND: usize = 256 << 10;

/// Bytes the socket is read ahead and writes are gathered in.
const SOCKET_BUFFER: usize = 64 << 10;

/// The socket as yamux sees it, buffered both ways. yamux writes a frame's
/// header and body apart and reads a header before its body: unbuffered,
/// every message cost four `sendto`s on one side and as many `recvfrom`s
/// (and wakeups) on the other. Buffered, the frames yamux has ready go out in
/// one write when it flushes, and one read takes whatever has arrived.
type Socket = BufReader<BufWriter<Compat<TcpStream>>>;

fn buffered(socket: TcpStream) -> Socket {
    BufReader::with_capacity(
        SOCKET_BUFFER,
        BufWriter::with_capacity(SOCKET_BUFFER, socket.compat()),
    )
}

fn config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_CHANNELS);
    config.set_split_send_size(SPLIT_SEND);
    config
}

fn broken(e: yamux::ConnectionError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e.to_string())
}

/// The client's end of a connection: opens channels. The connection closes
/// once every opener is dropped (each [`super::Space`] holds one).
#[derive(Clone)]
pub struct Opener {
    asks: mpsc::Sender<Reply>,
}

impl Opener {
    /// A new channel on the connection.
    pub async fn open(&self) -> std::io::Result<Channel> {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the connection to the node is closed",
            )
        };
        self.asks.send(reply).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Runs the client side of yamux on `socket` (in a task of its own) and
/// returns the way to open channels on it.
pub fn client(socket: TcpStream) -> Opener {
    let (asks, opens) = mpsc::channel(MAX_CHANNELS);
    let connection = yamux::Connection::new(buffered(socket), config(), yamux::Mode::Client);
    tokio::spawn(drive_client(connection, opens));
    Opener { asks }
}

async fn drive_client(mut connection: yamux::Connection<Socket>, mut opens: mpsc::Receiver<Reply>) {
    let mut waiting: VecDeque<Reply> = VecDeque::new();
    let mut openers_gone = false;
    poll_fn(|cx| loop {
        while !openers_gone {
            match opens.poll_recv(cx) {
                Poll::Ready(Some(reply)) => waiting.push_back(reply),
                Poll::Ready(None) => openers_gone = true,
                Poll::Pending => break,
            }
        }
        if let Some(reply) = waiting.pop_front() {
            match connection.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    let _ = reply.send(Ok(stream.compat()));
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    let _ = reply.send(Err(broken(e)));
                    return Poll::Ready(());
                }
                Poll::Pending => waiting.push_front(reply),
            }
        }
        // Polling for inbound streams is what moves every stream's bytes.
        match connection.poll_next_inbound(cx) {
            // The node opens no streams of its own.
            Poll::Ready(Some(Ok(stream))) => drop(stream),
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
            Poll::Pending if openers_gone && waiting.is_empty() => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
    if openers_gone {
        let _ = poll_fn(|cx| connection.poll_close(cx)).await;
    }
}

/// Runs the node's side of yamux on `socket`: each channel the client opens
/// is handed to `serve` in a task of its own, until the client hangs up.
pub async fn serve<F, Fut>(socket: TcpStream, serve: F)
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connection = yamux::Connection::new(buffered(socket), config(), yamux::Mode::Server);
    while let Some(Ok(stream)) = poll_fn(|cx| connection.poll_next_inbound(cx)).await {
        tokio::spawn(serve(stream.compat()));
    }
}
