//! A new file written in order from its start, sent to the space while it is
//! written: once it passes [`STREAM_FROM`] bytes its bytes go to the node as
//! they arrive (the node chunks and stores them at once), so closing it only
//! has to finish the put, not read a spool back and send all of it. Any other
//! pattern (a seek back, a hole, a truncation) abandons the stream — the
//! node writes nothing — and the spool sends the file whole as before; the
//! spool keeps every byte either way, for reads and for that fallback.

use std::{fs::File, os::unix::fs::FileExt};

use p3_objectspace::{api::Piece, object::PutOptions};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::client::{local, Node, Result};

/// Files smaller than this are sent whole when closed: a stream costs a
/// connection and a task, more than a small file's send.
pub const STREAM_FROM: u64 = 4 << 20;

/// Pieces waiting for the node; the writer blocks beyond this (each piece is
/// one kernel write, at most 1 MiB), so memory stays flat in the file's size.
const IN_FLIGHT: usize = 8;

/// Where a new file's stream stands.
pub enum Streaming {
    /// Not started: the file so far is `end` bytes written in order from 0.
    Waiting {
        /// The node to send it through.
        node: Node,
        /// The object it becomes.
        object: String,
        /// Bytes written in order so far.
        end: u64,
    },
    /// Its bytes are going to the node.
    Sending(Stream),
    /// Not streamed (the pattern did not allow it, or it was sent already).
    Off,
}

impl Streaming {
    /// A new file to be sent as `object` through `node`, if it is written in
    /// order.
    pub fn new(node: Node, object: String) -> Self {
        Streaming::Waiting {
            node,
            object,
            end: 0,
        }
    }

    /// `data` was written at `offset` of `file`; `options` are what the
    /// version would take now (a stream starts with them; its end says the
    /// final ones).
    pub fn wrote(
        &mut self,
        offset: u64,
        data: &[u8],
        file: &File,
        options: impl FnOnce() -> PutOptions,
    ) {
        let len = data.len() as u64;
        match self {
            Streaming::Waiting { node, object, end } => {
                if offset != *end {
                    tracing::debug!(%object, offset, end, "not written in order: not streamed");
                    *self = Streaming::Off;
                    return;
                }
                *end += len;
                if *end < STREAM_FROM {
                    return;
                }
                let mut stream = Stream::start(node, object.clone(), options());
                let ok = stream.push_from(file, *end);
                *self = if ok {
                    Streaming::Sending(stream)
                } else {
                    Streaming::Off
                };
            }
            Streaming::Sending(stream) => {
                if offset != stream.sent || !stream.push(data.to_vec()) {
                    *self = Streaming::Off;
                }
            }
            Streaming::Off => {}
        }
    }

    /// The file was cut or extended to `size`: only a size it already has
    /// (the `O_TRUNC` of a new file, say) keeps the stream.
    pub fn resized(&mut self, size: u64) {
        let end = match self {
            Streaming::Waiting { end, .. } => *end,
            Streaming::Sending(stream) => stream.sent,
            Streaming::Off => return,
        };
        if size != end {
            *self = Streaming::Off;
        }
    }

    /// The stream, if one is sending, for its end (streaming is over then).
    pub fn take(&mut self) -> Option<Stream> {
        match std::mem::replace(self, Streaming::Off) {
            Streaming::Sending(stream) => Some(stream),
            _ => None,
        }
    }
}

/// A put whose bytes are sent as they are written.
pub struct Stream {
    object: String,
    pieces: mpsc::Sender<Piece>,
    sent: u64,
    put: JoinHandle<Result<()>>,
}

impl Stream {
    fn start(node: &Node, object: String, options: PutOptions) -> Self {
        let (pieces, received) = mpsc::channel(IN_FLIGHT);
        let (sender, name) = (node.clone(), object.clone());
        let put = node.runtime().spawn(async move {
            let put = sender.put_pieces(&name, &options, received).await;
            if let Err(e) = &put {
                // Else unseen until the file is closed (and sent whole).
                tracing::warn!(object = %name, error = %e, "a streamed write failed; the file is sent whole when closed");
            }
            put.map(drop)
        });
        Stream {
            object,
            pieces,
            sent: 0,
            put,
        }
    }

    /// Hands `bytes` on, blocking while the node is behind; false once the
    /// put has failed (the spool sends the file whole then).
    fn push(&mut self, bytes: Vec<u8>) -> bool {
        let len = bytes.len() as u64;
        if self.pieces.blocking_send(Piece::Data(bytes)).is_err() {
            return false;
        }
        self.sent += len;
        true
    }

    /// Hands on the first `end` bytes of `file` (written before the stream
    /// began).
    fn push_from(&mut self, file: &File, end: u64) -> bool {
        while self.sent < end {
            let mut piece = vec![0u8; (end - self.sent).min(1 << 20) as usize];
            if file.read_exact_at(&mut piece, self.sent).is_err() {
                return false;
            }
            if !self.push(piece) {
                return false;
            }
        }
        true
    }

    /// The object it writes.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Bytes handed on so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Ends the value with `options` and waits until every owner holds it.
    pub async fn finish(self, options: PutOptions) -> Result<()> {
        let ended = self.pieces.send(Piece::End(options)).await;
        let put = self
            .put
            .await
            .map_err(|e| local(std::io::Error::other(e)))?;
        // A put that failed before the end reports why; one that ended
        // without failing cannot have missed the end.
        put?;
        ended.map_err(|_| local(std::io::Error::other("the stream ended early")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_in_order_from_the_start_keep_a_file_streamable() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let node = Node::new(runtime.handle().clone(), "/nonexistent".into());
        let file = tempfile::tempfile().expect("temp file");
        let waiting = |s: &Streaming| match s {
            Streaming::Waiting { end, .. } => Some(*end),
            _ => None,
        };

        let mut s = Streaming::new(node.clone(), "fs/f".into());
        s.resized(0); // the O_TRUNC of a new file
        s.wrote(0, &[1; 10], &file, PutOptions::default);
        s.wrote(10, &[2; 6], &file, PutOptions::default);
        assert_eq!(waiting(&s), Some(16));
        s.wrote(4, &[3; 2], &file, PutOptions::default);
        assert!(
            matches!(s, Streaming::Off),
            "a seek back rewrites sent bytes"
        );

        let mut s = Streaming::new(node.clone(), "fs/f".into());
        s.wrote(4096, &[1; 10], &file, PutOptions::default);
        assert!(matches!(s, Streaming::Off), "a hole");

        let mut s = Streaming::new(node, "fs/f".into());
        s.wrote(0, &[1; 10], &file, PutOptions::default);
        s.resized(4);
        assert!(matches!(s, Streaming::Off), "a truncation");
        assert!(s.take().is_none());
    }
}
