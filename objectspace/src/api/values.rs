//! Values in and out of a node through [`Space`]: puts streamed from a
//! reader or sent piece by piece as they are produced, and gets and takes
//! streamed to a writer, so a value of any size passes without being held in
//! memory.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    client::{unexpected, Space},
    protocol::{Request, Response, Wait, Written, DATA_FRAME, WHOLE_MAX},
};
use crate::{
    buffers,
    error::{Result, SpaceError},
    object::{PutOptions, Stat},
};

/// A piece of a value sent while it is produced ([`Space::put_pieces`]).
#[derive(Debug)]
pub enum Piece {
    /// The value's next bytes.
    Data(Vec<u8>),
    /// The value is complete; its version takes these options.
    End(PutOptions),
}

impl Space {
    /// Writes `path` (`NS/NAME`) with the bytes of `value`, streamed in frames so
    /// a value of any size passes without being held in memory. `size`, if
    /// known, lets the node refuse an oversized value before it is sent.
    /// `progress` is called with the bytes sent so far.
    pub async fn put(
        &mut self,
        path: &str,
        options: &PutOptions,
        size: Option<u64>,
        mut value: impl AsyncRead + Unpin,
        mut progress: impl FnMut(u64),
    ) -> Result<Written> {
        let unreadable =
            |e: std::io::Error| SpaceError::Invalid(format!("cannot read the value: {e}"));
        // A value that turns out small goes whole, with its request.
        let mut first = Vec::new();
        (&mut value)
            .take(WHOLE_MAX as u64 + 1)
            .read_to_end(&mut first)
            .await
            .map_err(unreadable)?;
        if first.len() <= WHOLE_MAX {
            let sent = first.len() as u64;
            let request = Request::PutWhole {
                path: path.to_owned(),
                options: options.clone(),
                value: first,
            };
            self.send(&request).await?;
            let written = self.written(sent).await?;
            progress(sent);
            return Ok(written);
        }
        self.begin_put(path, options, size).await?;
        let mut sent = first.len() as u64;
        self.send_data(&first).await?;
        progress(sent);
        let mut buf = vec![0u8; DATA_FRAME];
        loop {
            let n = value.read(&mut buf).await.map_err(unreadable)?;
            if n == 0 {
                break;
            }
            self.send_data(&buf[..n]).await?;
            sent += n as u64;
            progress(sent);
        }
        self.send(&Request::End).await?;
        self.written(sent).await
    }

    /// Writes `path` with a value sent while it is produced: the bytes of
    /// every [`Piece::Data`] from `pieces`, until a [`Piece::End`] gives the
    /// options the version takes (those of the start may be out of date by
    /// then). When `pieces` closes before its end, nothing is written and
    /// this fails; the value is left unfinished on this connection, so the
    /// caller must drop it.
    pub async fn put_pieces(
        &mut self,
        path: &str,
        options: &PutOptions,
        mut pieces: tokio::sync::mpsc::Receiver<Piece>,
    ) -> Result<Written> {
        self.begin_put(path, options, None).await?;
        let mut sent = 0u64;
        let last = loop {
            match pieces.recv().await {
                Some(Piece::Data(bytes)) => {
                    sent += bytes.len() as u64;
                    for frame in bytes.chunks(DATA_FRAME) {
                        self.send_data(frame).await?;
                    }
                }
                Some(Piece::End(last)) => break last,
                None => {
                    return Err(SpaceError::Invalid(format!(
                        "the value of {path} was abandoned before its end; nothing was written"
                    )))
                }
            }
        };
        self.send(&Request::EndWith(last)).await?;
        self.written(sent).await
    }

    /// Asks to write `path`; the value's frames may follow once this returns.
    async fn begin_put(
        &mut self,
        path: &str,
        options: &PutOptions,
        size: Option<u64>,
    ) -> Result<()> {
        let request = Request::Put {
            path: path.to_owned(),
            options: options.clone(),
            size,
        };
        match self.call(request).await? {
            Response::Ready => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The answer to a put of `sent` bytes.
    async fn written(&mut self, sent: u64) -> Result<Written> {
        // The node answers once every owner holds the value: two transfers of it
        // on top of the usual deadline, at no less than 8 MiB/s.
        let deadline = self.timeout + Duration::from_secs(sent.saturating_mul(2) / (8 << 20));
        match self.receive_within(deadline).await? {
            Response::Written(w) => Ok(w),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a value held in memory.
    pub async fn put_bytes(
        &mut self,
        path: &str,
        options: &PutOptions,
        value: &[u8],
    ) -> Result<Written> {
        self.put(path, options, Some(value.len() as u64), value, |_| {})
            .await
    }

    /// Reads `path` into `out`, streaming; returns its metadata. The bytes are
    /// verified against the object's hash by the node; `progress` gets the bytes
    /// received so far.
    pub async fn get(
        &mut self,
        path: &str,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        self.get_waiting(path, None, out, progress).await
    }

    /// [`Space::get`] that first waits, up to `wait`, until the object exists
    /// (with a version above [`Wait::after_version`], if given). The node waits
    /// for the write to happen rather than asking again and again.
    pub async fn get_waiting(
        &mut self,
        path: &str,
        wait: Option<Wait>,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let patience = wait.map_or(Duration::ZERO, |w| Duration::from_millis(w.ms));
        let request = Request::Get {
            path: path.to_owned(),
            wait,
        };
        self.receive_value(request, patience, out, progress).await
    }

    /// Takes `path` (reads and removes it in one step; of concurrent takers
    /// exactly one gets it), waiting up to `wait` for it to exist, and writes its
    /// value to `out`.
    pub async fn take(
        &mut self,
        path: &str,
        wait: Option<Duration>,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let request = Request::Take {
            path: path.to_owned(),
            wait_ms: wait.map(millis),
        };
        self.receive_value(request, wait.unwrap_or_default(), out, progress)
            .await
    }

    /// Takes any one object of `namespace` matching `query`, waiting up to
    /// `wait` for one, and writes its value to `out`.
    pub async fn take_match(
        &mut self,
        namespace: &str,
        query: &str,
        wait: Option<Duration>,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let request = Request::TakeMatch {
            namespace: namespace.to_owned(),
            query: query.to_owned(),
            wait_ms: wait.map(millis),
        };
        self.receive_value(request, wait.unwrap_or_default(), out, progress)
            .await
    }

    /// Sends a request answered by a value and streams the value to `out`.
    async fn receive_value(
        &mut self,
        request: Request,
        patience: Duration,
        mut out: impl AsyncWrite + Unpin,
        mut progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let mut incoming = self.incoming(request, patience).await?;
        let cannot =
            |e: std::io::Error| SpaceError::Invalid(format!("cannot write the value: {e}"));
        while let Some(bytes) = incoming.next().await? {
            out.write_all(&bytes).await.map_err(cannot)?;
            buffers::give_back(bytes);
            progress(&incoming.stat, incoming.received);
        }
        out.flush().await.map_err(cannot)?;
        Ok(incoming.stat)
    }

    /// Reads `path` frame by frame: the caller takes each piece of the value
    /// as it arrives, without a copy (the mount hands them to the kernel).
    pub async fn get_incoming(&mut self, path: &str) -> Result<Incoming<'_>> {
        let request = Request::Get {
            path: path.to_owned(),
            wait: None,
        };
        self.incoming(request, Duration::ZERO).await
    }

    /// Sends a request answered by a value; its frames follow.
    async fn incoming(&mut self, request: Request, patience: Duration) -> Result<Incoming<'_>> {
        self.send(&request).await?;
        let stat = match self.receive_within(self.timeout + patience).await? {
            Response::Object(stat) => stat,
            other => return Err(unexpected(other)),
        };
        Ok(Incoming {
            space: self,
            stat,
            received: 0,
            ended: false,
        })
    }

    /// Reads a value into memory.
    pub async fn get_bytes(&mut self, path: &str) -> Result<(Stat, Vec<u8>)> {
        let mut out = Vec::new();
        let stat = self.get(path, &mut out, |_, _| {}).await?;
        Ok((stat, out))
    }
}

/// A value arriving from the node: its metadata, then its bytes in frames.
pub struct Incoming<'a> {
    space: &'a mut Space,
    stat: Stat,
    received: u64,
    ended: bool,
}

impl Incoming<'_> {
    /// The object's metadata, known before its bytes.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The value's next bytes; `None` once all of them (and no more than the
    /// metadata's size) have arrived. A value that ends short is an error, so
    /// a reader never takes a truncated value for a whole one. Bytes done
    /// with may go to [`buffers::give_back`] for the next frames.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        if self.ended {
            return Ok(None);
        }
        match self.space.receive().await? {
            Response::Data(bytes) => {
                self.received += bytes.len() as u64;
                Ok(Some(bytes))
            }
            Response::End => {
                self.ended = true;
                if self.received != self.stat.size {
                    return Err(SpaceError::Corrupt(format!(
                        "received {} of {} bytes",
                        self.received, self.stat.size
                    )));
                }
                Ok(None)
            }
            other => Err(unexpected(other)),
        }
    }
}

/// A wait in whole milliseconds, as requests carry it.
fn millis(wait: Duration) -> u64 {
    wait.as_millis().try_into().unwrap_or(u64::MAX)
}
