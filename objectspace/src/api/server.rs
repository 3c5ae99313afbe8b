//! The node's side of the local API.

mod puts;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

use super::{
    mux::{self, Channel},
    protocol::{Hello, Request, Response, SpaceStatus, Wait, DATA_FRAME},
    read_frame, write_data, write_frame, FrameError, Frames,
};
use crate::{
    error::{Result, SpaceError},
    local::{path_of, writable, MIN_LEASE},
    lock::{keep, Held, LockMode},
    name::{Namespace, ObjectPath},
    namespaces::SYSTEM,
    object::{PutOptions, VOLATILE_MAX},
    query::Query,
    read::Found,
    space::ObjectSpace,
    take::Taken,
    watch::Watch,
    write::volatile_too_large,
};

/// Accepts API connections until the task is dropped.
pub async fn serve(listener: TcpListener, token: String, space: ObjectSpace) {
    let token = Arc::new(token);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (token, space) = (token.clone(), space.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &token, &space).await {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "API accept failed"),
        }
    }
}

/// One client connection: the hello, then as many channels as it opens.
async fn connection(
    mut stream: TcpStream,
    token: &str,
    space: &ObjectSpace,
) -> Result<(), FrameError> {
    stream.set_nodelay(true).ok();
    let Some(hello) = read_frame::<_, Hello>(&mut stream).await? else {
        return Ok(());
    };
    let admitted = same(hello.token.as_bytes(), token.as_bytes());
    mux::serve(stream, |channel| {
        let space = space.clone();
        async move {
            let served = if admitted {
                session(channel, &space).await
            } else {
                refuse(channel).await
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "API channel ended");
            }
        }
    })
    .await;
    Ok(())
}

/// Answers a channel of a client with the wrong token.
async fn refuse(mut channel: Channel) -> Result<(), FrameError> {
    let refusal = Response::Error(SpaceError::Invalid(
        "wrong API token; use the api.json of this node's data dir".into(),
    ));
    // Its first request is read (and ignored) so that the answer is one.
    read_frame::<_, Request>(&mut channel).await?;
    write_frame(&mut channel, &refusal).await
}

/// One channel: requests answered one after another, as a connection's were.
async fn session(mut stream: Channel, space: &ObjectSpace) -> Result<(), FrameError> {
    while let Some(request) = read_frame::<_, Request>(&mut stream).await? {
        match request {
            Request::Put {
                path,
                options,
                size,
            } => puts::put(&mut stream, space, &path, options, size).await?,
            Request::PutWhole {
                path,
                options,
                value,
            } => {
                let written = puts::put_whole(space, &path, options, value).await;
                let answer = written.map_or_else(Response::Error, Response::Written);
                write_frame(&mut stream, &answer).await?;
            }
            Request::Get { path, wait } => get(&mut stream, space, &path, wait).await?,
            Request::Take { path, wait_ms } => take(&mut stream, space, &path, wait_ms).await?,
            Request::TakeMatch {
                namespace,
                query,
                wait_ms,
            } => match take_match(space, &namespace, &query, wait_ms).await {
                Ok(taken) => send_value(&mut stream, space, &taken.found).await?,
                Err(e) => write_frame(&mut stream, &Response::Error(e)).await?,
            },
            Request::Lock {
                path,
                mode,
                lease_ms,
                timeout_ms,
            } => return hold_lock(stream, space, &path, mode, lease_ms, timeout_ms).await,
            Request::Watch {
                namespace,
                prefix,
                exact,
            } => {
                return watch(stream, space, &namespace, &prefix, exact).await;
            }
            request => {
                let answer = handle(request, space).await.unwrap_or_else(Response::Error);
                write_frame(&mut stream, &answer).await?;
            }
        }
    }
    Ok(())
}

async fn get(
    stream: &mut Channel,
    space: &ObjectSpace,
    path: &str,
    wait: Option<Wait>,
) -> Result<(), FrameError> {
    match find(space, path, wait).await {
        Ok(found) => send_value(stream, space, &found).await,
        Err(e) => write_frame(stream, &Response::Error(e)).await,
    }
}

async fn take(
    stream: &mut Channel,
    space: &ObjectSpace,
    path: &str,
    wait_ms: Option<u64>,
) -> Result<(), FrameError> {
    match take_path(space, path, wait_ms).await {
        // The hold on the value lasts until it is sent.
        Ok(taken) => send_value(stream, space, &taken.found).await,
        Err(e) => write_frame(stream, &Response::Error(e)).await,
    }
}

/// Sends an object's metadata, then its value as data frames, then the end.
async fn send_value(
    stream: &mut Channel,
    space: &ObjectSpace,
    found: &Found,
) -> Result<(), FrameError> {
    let mut frames = Frames::default();
    frames.push(&Response::Object(found.record.stat()))?;
    match space.value_at_hand(found) {
        // A small value: the whole answer in one write.
        Ok(Some(bytes)) => {
            if !bytes.is_empty() {
                frames.push_data(bytes)?;
            }
            crate::metrics::bytes_out(found.record.size);
            frames.push(&Response::End)?;
            return frames.send(stream).await;
        }
        Ok(None) => frames.send(stream).await?,
        Err(e) => {
            frames.push(&Response::Error(e))?;
            return frames.send(stream).await;
        }
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let producer = async move { space.stream_value(found, &tx).await };
    let consumer = async {
        while let Some(chunk) = rx.recv().await {
            for piece in chunk.chunks(DATA_FRAME) {
                write_data(stream, piece).await?;
            }
            crate::buffers::give_back(chunk);
        }
        Ok::<_, FrameError>(stream)
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    let stream = consumed?;
    let last = match produced {
        Ok(()) => Response::End,
        Err(e) => Response::Error(e),
    };
    write_frame(stream, &last).await
}

/// Acquires a lock and holds it for the client: renews its lease while the
/// connection is open (telling the client how long it holds, or that it was
/// lost), releases it on `Unlock` or when the client goes away.
async fn hold_lock(
    mut stream: Channel,
    space: &ObjectSpace,
    path: &str,
    mode: LockMode,
    lease_ms: u64,
    timeout_ms: Option<u64>,
) -> Result<(), FrameError> {
    let lease = Duration::from_millis(lease_ms).max(MIN_LEASE);
    let acquired = async {
        let path = path_of(path)?;
        // "Forever" is a year; the acquirer retries with each new primary.
        let wait = timeout_ms.map_or(Duration::from_secs(365 * 24 * 3600), Duration::from_millis);
        let (grant, keeper) = space.acquire(&path, mode, lease, wait).await?;
        Ok::<_, SpaceError>((path, grant, keeper))
    };
    let (path, grant, keeper) = match acquired.await {
        Ok(held) => held,
        Err(e) => return write_frame(&mut stream, &Response::Error(e)).await,
    };
    let (sender, mut held) = watch::channel(keeper.held());
    let renewer = AbortOnDrop(tokio::spawn(keep(
        space.clone(),
        path.clone(),
        grant.clone(),
        keeper,
        sender,
    )));
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Polled across iterations, never dropped half-read.
    let request = read_frame::<_, Request>(&mut reader);
    tokio::pin!(request);
    let mut lost: Option<SpaceError> = None;
    held.mark_changed();
    loop {
        tokio::select! {
            frame = &mut request => {
                renewer.0.abort();
                let answer = match lost.take() {
                    Some(e) => Response::Error(e),
                    None => match space.release(&path, grant.holder).await {
                        Ok(()) => Response::Done,
                        Err(e) => Response::Error(e),
                    },
                };
                if matches!(frame, Ok(Some(Request::Unlock))) {
                    write_frame(&mut writer, &answer).await?;
                }
                return Ok(());
            }
            changed = held.changed(), if lost.is_none() => {
                let news = match (changed, held.borrow_and_update().clone()) {
                    (Ok(()), Held::Until(until)) => Response::Locked {
                        grant: grant.clone(),
                        valid_ms: until.saturating_duration_since(Instant::now()).as_millis() as u64,
                    },
                    (Ok(()), Held::Lost(e)) => {
                        lost = Some(e.clone());
                        Response::LockLost(e)
                    }
                    (Err(_), _) => {
                        let e = SpaceError::Stopped;
                        lost = Some(e.clone());
                        Response::LockLost(e)
                    }
                };
                write_frame(&mut writer, &news).await?;
            }
        }
    }
}

/// Aborts a task when dropped: a lock's renewals end with its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends events until the client hangs up (or the node stops).
async fn watch(
    mut stream: Channel,
    space: &ObjectSpace,
    namespace: &str,
    prefix: &str,
    exact: bool,
) -> Result<(), FrameError> {
    let mut events = match start_watch(space, namespace, prefix, exact).await {
        Ok(events) => events,
        Err(e) => return write_frame(&mut stream, &Response::Error(e)).await,
    };
    write_frame(&mut stream, &Response::Watching).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    loop {
        tokio::select! {
            // The client sends nothing more; this ends when it hangs up.
            _ = read_frame::<_, Request>(&mut reader) => return Ok(()),
            event = events.next() => match event {
                Ok(event) => write_frame(&mut writer, &Response::Event(event)).await?,
                Err(e) => return write_frame(&mut writer, &Response::Error(e)).await,
            },
        }
    }
}

// The operations below are the API's: the CBOR sessions above and the node's
// HTTP server (crate `p3-http`) both call them, so that a check or a rule is
// written once.

/// Checks a write before any byte of its value moves: the path, the reserved
/// namespace, the size if announced (against the node's limit, and the
/// volatile limit), and that the namespace exists.
pub async fn check_put(
    space: &ObjectSpace,
    path: &str,
    options: &PutOptions,
    size: Option<u64>,
) -> Result<ObjectPath> {
    let path = path_of(path)?;
    writable(&path)?;
    let max = space.config().max_object_bytes;
    if let Some(size) = size.filter(|s| *s > max) {
        return Err(SpaceError::TooLarge { size, max });
    }
    if let Some(size) = size.filter(|s| options.volatile && *s > VOLATILE_MAX) {
        return Err(volatile_too_large(size));
    }
    space.check_namespace(&path.namespace).await?;
    Ok(path)
}

/// Finds the current version of `path` to read, waiting for it if asked.
pub async fn find(space: &ObjectSpace, path: &str, wait: Option<Wait>) -> Result<Found> {
    let path = path_of(path)?;
    match wait {
        Some(w) => {
            let patience = Duration::from_millis(w.ms);
            space.find_newer(&path, w.after_version, patience).await
        }
        None => space.find(&path, true).await,
    }
}

/// Takes `path`, waiting up to `wait_ms` for it to exist.
pub async fn take_path(space: &ObjectSpace, path: &str, wait_ms: Option<u64>) -> Result<Taken> {
    let path = path_of(path)?;
    writable(&path)?;
    space.take(&path, wait_ms.map(Duration::from_millis)).await
}

/// Takes any one object of `namespace` that matches `query`.
pub async fn take_match(
    space: &ObjectSpace,
    namespace: &str,
    query: &str,
    wait_ms: Option<u64>,
) -> Result<Taken> {
    let ns = Namespace::new(namespace)?;
    if ns.as_str() == SYSTEM {
        return Err(SpaceError::Invalid(format!(
            "namespace {SYSTEM} is reserved"
        )));
    }
    let wait = Duration::from_millis(wait_ms.unwrap_or(0));
    space.take_match(&ns, &Query::parse(query)?, wait).await
}

/// Starts a watch of the objects of `namespace` whose names start with
/// `prefix` (only the one named `prefix` if `exact`).
pub async fn start_watch(
    space: &ObjectSpace,
    namespace: &str,
    prefix: &str,
    exact: bool,
) -> Result<Watch> {
    let watch = space.watch(&Namespace::new(namespace)?, prefix).await?;
    Ok(if exact { watch.exact() } else { watch })
}

/// Answers the requests that get exactly one answer.
pub async fn handle(request: Request, space: &ObjectSpace) -> Result<Response> {
    let node = space.node();
    let namespaces = &space.inner.namespaces;
    Ok(match request {
        Request::Status => Response::Status(SpaceStatus {
            node: node.status().await?,
            events_received: space.events_received(),
            volatile_bytes: space.store().volatile_bytes(),
        }),
        Request::Peers => Response::Peers(node.peers().await?),
        Request::Closest { key } => Response::Closest(
            node.closest_peers(key)
                .await?
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
        Request::Stat { path, local: false } => {
            Response::Object(space.stat(&path_of(&path)?).await?)
        }
        Request::Stat { path, local: true } => {
            Response::Object(space.stat_local(&path_of(&path)?).await?)
        }
        Request::Remove {
            path,
            if_version,
            token,
        } => {
            let path = path_of(&path)?;
            writable(&path)?;
            Response::Written(space.remove(&path, if_version, token).await?)
        }
        Request::Copy { from, to, options } => {
            let (from, to) = (path_of(&from)?, path_of(&to)?);
            writable(&to)?;
            space.check_namespace(&to.namespace).await?;
            Response::Written(space.copy(&from, &to, options).await?)
        }
        Request::List { namespace, prefix } => {
            Response::Objects(space.list(&Namespace::new(&namespace)?, &prefix).await?)
        }
        Request::CreateNamespace(name) => {
            namespaces
                .create(space, &Namespace::new(&name)?, (Vec::new(), false))
                .await?;
            Response::Done
        }
        Request::RemoveNamespace(name) => {
            namespaces.remove(space, &Namespace::new(&name)?).await?;
            Response::Done
        }
        Request::ListNamespaces => Response::Namespaces(namespaces.list(space).await?),
        Request::CreateWriterOnly {
            name,
            writers,
            private,
        } => {
            let writers = peer_ids(&writers)?;
            if writers.is_empty() {
                return Err(SpaceError::Invalid(
                    "a writer-only namespace needs at least one --writer".into(),
                ));
            }
            namespaces
                .create(space, &Namespace::new(&name)?, (writers, private))
                .await?;
            Response::Done
        }
        Request::ChangeWriters {
            name,
            grant,
            revoke,
        } => {
            let ns = Namespace::new(&name)?;
            let (grant, revoke) = (peer_ids(&grant)?, peer_ids(&revoke)?);
            let now = namespaces
                .change_writers(space, &ns, &grant, &revoke)
                .await?;
            Response::Writers(now.iter().map(ToString::to_string).collect())
        }
        Request::Writers(name) => {
            let ns = Namespace::new(&name)?;
            let now = namespaces.current_writers(space, &ns).await?;
            Response::Writers(now.iter().map(ToString::to_string).collect())
        }
        Request::Search { namespace, query } => {
            let query = Query::parse(&query)?;
            let mut found = space.search(&Namespace::new(&namespace)?, &query).await?;
            for entry in &mut found {
                entry.summary.content = None;
            }
            Response::Matches(found)
        }
        Request::Put { .. }
        | Request::PutWhole { .. }
        | Request::Get { .. }
        | Request::Take { .. }
        | Request::TakeMatch { .. }
        | Request::Lock { .. }
        | Request::Unlock
        | Request::Watch { .. }
        | Request::Data(_)
        | Request::End
        | Request::EndWith(_) => return Err(SpaceError::Invalid("unexpected request".into())),
    })
}

/// Token comparison in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// PeerIds from a client, each checked.
fn peer_ids(ids: &[String]) -> Result<Vec<p3_dht::PeerId>> {
    ids.iter()
        .map(|id| {
            id.parse().map_err(|_| {
                SpaceError::Invalid(format!(
                    "{id:?} is not a PeerId (`p3ctl node status` prints a node's)"
                ))
            })
        })
        .collect()
}
