//! Moving blobs between nodes over libp2p streams (protocol
//! [`p3_dht::BLOB_PROTOCOL`]), one chunk at a time, verified as they arrive.
//!
//! The fetcher opens a stream and sends a [`FetchRequest`]; the holder answers
//! with a [`FetchHeader`] (the manifest, or "missing"), then the requested chunks
//! as length-prefixed frames, then closes. The fetcher checks every chunk against
//! the manifest before storing it and the whole content against the blob hash
//! at the end; if a source fails midway it resumes at the same chunk from the
//! next source. Memory use is one chunk per transfer, whatever the blob's size.

use std::{sync::Arc, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use p3_dht::{IncomingStreams, Node, PeerId, Stream, BLOB_PROTOCOL};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::{sync::Semaphore, time::timeout};

use crate::{
    blob::{BlobHash, Manifest, Verifier, CHUNK_SIZE},
    buffers,
    error::{Result, SpaceError},
    store::{BlobWriter, Pin, Store},
};

/// Longest a manifest frame may be (128 Ki chunks: blobs up to 128 GiB).
const MAX_HEADER: usize = (4 << 20) + 64;
/// Longest any single read or write on a blob stream may stall.
const STALL: Duration = Duration::from_secs(30);
/// Streams a node serves at once; more wait.
const MAX_SERVING: usize = 32;
/// Times a fetch asks one holder whose stream broke before it moves on.
const STREAM_TRIES: u32 = 3;

/// What the fetcher asks for.
#[derive(Debug, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The blob.
    pub hash: BlobHash,
    /// First chunk wanted (to resume after a failed source).
    pub from_chunk: u64,
}

/// The holder's first answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum FetchHeader {
    /// The manifest; the chunks follow.
    Found(Manifest),
    /// This node does not hold the blob (any more).
    Missing,
}

async fn write_frame(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    timeout(STALL, async {
        stream
            .write_all(&(bytes.len() as u32).to_be_bytes())
            .await?;
        stream.write_all(bytes).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading"))?
}

async fn read_frame(stream: &mut Stream, max: usize) -> std::io::Result<Vec<u8>> {
    timeout(STALL, async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is over the {max}-byte limit"),
            ));
        }
        let mut buf = buffers::filled(len);
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped sending"))?
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    // Encoding our own plain types into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut buf);
    buf
}

fn uncbor<T: DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    ciborium::from_reader(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Runs a blocking store operation off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SpaceError::Storage(format!("storage task failed: {e}")))?
}

/// Serves blob fetches from other nodes until the node stops.
pub async fn serve(mut incoming: IncomingStreams, store: Store) {
    let slots = Arc::new(Semaphore::new(MAX_SERVING));
    while let Some((peer, stream)) = incoming.next().await {
        // Waits for a slot in the task, not here: a stream that arrives
        // while this loop is not polling is dropped by libp2p.
        let (slots, store) = (slots.clone(), store.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            if let Err(e) = serve_one(stream, store).await {
                tracing::debug!(%peer, error = %e, "blob stream ended early");
            }
        });
    }
}

async fn serve_one(mut stream: Stream, store: Store) -> std::io::Result<()> {
    let request: FetchRequest = uncbor(&read_frame(&mut stream, 1024).await?)?;
    let hash = request.hash;
    let _pin = store.pin(hash);
    let lookup = store.clone();
    let manifest = blocking(move || lookup.manifest(&hash))
        .await
        .ok()
        .flatten();
    let Some(manifest) = manifest else {
        write_frame(&mut stream, &cbor(&FetchHeader::Missing)).await?;
        return stream.close().await;
    };
    store.touch(&hash);
    write_frame(&mut stream, &cbor(&FetchHeader::Found(manifest.clone()))).await?;
    for &chunk in manifest.chunks().iter().skip(request.from_chunk as usize) {
        let reader = store.clone();
        let bytes = blocking(move || reader.chunk(&chunk))
            .await
            .ok()
            .flatten()
            .ok_or_else(|| std::io::Error::other(format!("chunk {chunk} of {hash} is missing")))?;
        write_frame(&mut stream, &bytes).await?;
        buffers::give_back(bytes);
    }
    stream.close().await
}

/// Where fetched chunks go besides the store (e.g. to an API client reading the
/// value while it arrives).
pub type ChunkSink = tokio::sync::mpsc::Sender<Vec<u8>>;

/// The state of one blob fetch, carried from a failed source to the next.
struct Fetch<'a> {
    hash: BlobHash,
    writer: BlobWriter,
    verifier: Verifier,
    manifest: Option<Manifest>,
    next: u64,
    sink: Option<&'a ChunkSink>,
}

/// Fetches blob `hash` from the first of `sources` that has it, into the store
/// (as a cached blob; the caller pins it), sending each verified chunk to `sink`
/// as well. Returns the manifest and a pin that keeps the blob from eviction.
pub async fn fetch(
    node: &Node,
    store: &Store,
    hash: BlobHash,
    sources: &[PeerId],
    sink: Option<&ChunkSink>,
) -> Result<(Manifest, Pin)> {
    let mut fetch = Fetch {
        hash,
        writer: store.writer(),
        verifier: Verifier::new(hash),
        manifest: None,
        next: 0,
        sink,
    };
    let mut failures = Vec::new();
    'sources: for &source in sources {
        for attempt in 1..=STREAM_TRIES {
            let failure = match fetch.from(node, source).await {
                Ok(()) => break 'sources,
                // The holder may have dropped the stream unread (libp2p
                // drops an inbound stream that arrives while the previous
                // one is still being handed over): ask it again, from the
                // chunk where it stopped.
                Err(Failed::Stream(e)) if attempt < STREAM_TRIES => {
                    tracing::debug!(%source, %hash, error = %e, "blob stream broke; asking again");
                    tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
                    continue;
                }
                Err(Failed::Stream(e)) => SpaceError::Unavailable(format!("blob stream: {e}")),
                Err(Failed::Refused(e)) => e,
            };
            if sink.is_some_and(|s| s.is_closed()) {
                return Err(SpaceError::Unavailable("the reader went away".into()));
            }
            failures.push(format!("{source}: {failure}"));
            break;
        }
    }
    let complete = fetch
        .manifest
        .as_ref()
        .is_some_and(|m| fetch.next == m.chunks().len() as u64);
    let (Some(manifest), true) = (fetch.manifest, complete) else {
        return Err(SpaceError::Unavailable(format!(
            "no holder of blob {hash} could send it ({})",
            if failures.is_empty() {
                "no holder known".to_owned()
            } else {
                failures.join("; ")
            }
        )));
    };
    fetch.verifier.finish()?;
    let writer = fetch.writer;
    let committed = manifest.clone();
    let pin = blocking(move || writer.commit(hash, committed)).await?;
    Ok((manifest, pin))
}

/// Why a source did not send a blob: its stream broke (worth asking again),
/// or it refused or sent something wrong.
enum Failed {
    Stream(std::io::Error),
    Refused(SpaceError),
}

impl From<SpaceError> for Failed {
    fn from(e: SpaceError) -> Self {
        Failed::Refused(e)
    }
}

impl Fetch<'_> {
    /// Receives the remaining chunks from `source`.
    async fn from(&mut self, node: &Node, source: PeerId) -> Result<(), Failed> {
        let io = Failed::Stream;
        let mut stream = node
            .open_stream(source, BLOB_PROTOCOL)
            .await
            .map_err(SpaceError::from)?;
        let request = FetchRequest {
            hash: self.hash,
            from_chunk: self.next,
        };
        write_frame(&mut stream, &cbor(&request))
            .await
            .map_err(io)?;
        let header: FetchHeader =
            uncbor(&read_frame(&mut stream, MAX_HEADER).await.map_err(io)?)
                .map_err(|e| SpaceError::Corrupt(format!("bad blob header: {e}")))?;
        let theirs = match header {
            FetchHeader::Found(m) => m,
            FetchHeader::Missing => {
                return Err(SpaceError::Unavailable("does not hold it".into()).into())
            }
        };
        let manifest = self.manifest.get_or_insert_with(|| theirs.clone()).clone();
        if manifest != theirs {
            return Err(
                SpaceError::Corrupt("a different manifest than another holder".into()).into(),
            );
        }
        while self.next < manifest.chunks().len() as u64 {
            let index = self.next as usize;
            let bytes = read_frame(&mut stream, CHUNK_SIZE).await.map_err(io)?;
            manifest.verify_chunk(index, &bytes)?;
            self.verifier.update(&bytes);
            let chunk = manifest.chunks()[index];
            let writer = &mut self.writer;
            tokio::task::block_in_place(|| writer.write_chunk(chunk, &bytes))?;
            match self.sink {
                Some(sink) => sink
                    .send(bytes)
                    .await
                    .map_err(|_| SpaceError::Unavailable("the reader went away".into()))?,
                None => buffers::give_back(bytes),
            }
            self.next += 1;
        }
        Ok(())
    }
}
