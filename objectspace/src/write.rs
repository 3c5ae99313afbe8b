//! The client side of writes: taking a value from a client into the local store,
//! then sending the write to the key's primary (which [`crate::service`] runs).

use p3_dht::PeerId;

use crate::{
    api::protocol::Written,
    blob::{BlobHash, Chunker, INLINE_MAX},
    error::{Result, SpaceError},
    name::ObjectPath,
    object::{ObjectRecord, PutOptions, MAX_META_BYTES, VOLATILE_MAX},
    protocol::{PeerRequest, PeerResponse, WriteOp, WriteRequest},
    read::read_small,
    replica::IN_PLACE_MAX,
    space::ObjectSpace,
    store::{BlobWriter, Pin},
    transfer::blocking,
};

/// A value being received from a client, chunked and stored as it arrives.
pub struct Ingest {
    chunker: Chunker,
    writer: BlobWriter,
    max: u64,
}

impl Ingest {
    /// Stores the next bytes of the value (blocking on disk).
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        let size = self.chunker.size() + bytes.len() as u64;
        if size > self.max {
            return Err(SpaceError::TooLarge {
                size,
                max: self.max,
            });
        }
        let writer = &mut self.writer;
        self.chunker
            .push(bytes, |hash, chunk| writer.write_chunk(hash, chunk))
    }

    /// Completes the value: its hash, size, and a pin that keeps it stored
    /// until a record points at it.
    pub fn finish(self) -> Result<(BlobHash, u64, Pin)> {
        let mut writer = self.writer;
        let (hash, manifest) = self
            .chunker
            .finish(|hash, chunk| writer.write_chunk(hash, chunk))?;
        let size = manifest.size();
        Ok((hash, size, writer.commit(hash, manifest)?))
    }
}

/// The refusal of a volatile value of `size` bytes.
pub fn volatile_too_large(size: u64) -> SpaceError {
    SpaceError::VolatileTooLarge {
        size,
        max: VOLATILE_MAX,
    }
}

fn check_meta(options: &PutOptions) -> Result<()> {
    let meta_size = options.type_tag.len()
        + options
            .meta
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len())
            .sum::<usize>();
    if meta_size > MAX_META_BYTES {
        return Err(SpaceError::Invalid(format!(
            "type and metadata take {meta_size} bytes; the limit is {MAX_META_BYTES}"
        )));
    }
    Ok(())
}

/// The write a put of `blob` with `options` sends, and its conditions
/// (version, fencing token).
fn put_op(blob: BlobHash, size: u64, options: PutOptions) -> (WriteOp, (Option<u64>, Option<u64>)) {
    let conditions = (options.if_version, options.token);
    let op = WriteOp::Put {
        blob,
        size,
        type_tag: options.type_tag,
        meta: options.meta,
        ttl_ms: options.ttl_ms,
        volatile: options.volatile,
    };
    (op, conditions)
}

impl ObjectSpace {
    /// Starts receiving a value from a client.
    pub fn ingest(&self) -> Ingest {
        Ingest {
            chunker: Chunker::new(),
            writer: self.inner.store.writer(),
            max: self.inner.config.max_object_bytes,
        }
    }

    /// Writes `path` to point at a blob already in the local store.
    pub async fn put(
        &self,
        path: &ObjectPath,
        options: PutOptions,
        blob: BlobHash,
        size: u64,
    ) -> Result<Written> {
        crate::metrics::observe_put(async {
            check_meta(&options)?;
            if options.volatile && size > VOLATILE_MAX {
                return Err(volatile_too_large(size));
            }
            let inline = if size <= IN_PLACE_MAX {
                Some(read_small(&self.inner.store, &blob)?)
            } else if size <= INLINE_MAX {
                let store = self.inner.store.clone();
                Some(blocking(move || read_small(&store, &blob)).await?)
            } else {
                None
            };
            let volatile = options.volatile;
            let (op, conditions) = put_op(blob, size, options);
            let written = self.submit(path, op, conditions, inline).await?;
            if !volatile {
                // This node holds the value too (owner or not): say so.
                self.announce(blob, size);
            }
            Ok(written)
        })
        .await
    }

    /// Writes a value held in memory. One that fits in a message (every
    /// volatile one) goes to the owners inside it and never touches this
    /// node's disk: an owner stores it as it would a copy, and a non-owner
    /// had no use for it (it would only be cached, then evicted). A larger
    /// one is stored here first, like a client's.
    pub async fn put_value(
        &self,
        path: &ObjectPath,
        bytes: Vec<u8>,
        options: PutOptions,
    ) -> Result<Written> {
        crate::metrics::observe_put(self.put_small(path, bytes, options)).await
    }

    /// Writes `to` with the value `from` has now, without the bytes passing
    /// through a client: the value is made local (fetched into the cache if
    /// needed, or taken from the owners' answer when small) and `to` points at
    /// it. How a mount renames a file or changes only its metadata.
    pub async fn copy(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: PutOptions,
    ) -> Result<Written> {
        let found = self.find(from, true).await?;
        let Some(hash) = found.record.blob else {
            return Err(SpaceError::NotFound(from.to_string()));
        };
        let size = found.record.size;
        let store = self.inner.store.clone();
        let _pin = store.pin(hash);
        if let Some(bytes) = found.inline.clone() {
            let mut ingest = self.ingest();
            let (stored, _, _ingested) = blocking(move || {
                ingest.push(&bytes)?;
                ingest.finish()
            })
            .await?;
            if stored != hash {
                return Err(SpaceError::Corrupt(format!(
                    "inline value of {hash} does not match"
                )));
            }
            return self.put(to, options, hash, size).await;
        }
        let lookup = store.clone();
        if blocking(move || lookup.manifest(&hash)).await?.is_none() {
            // Fetch it into the cache; the chunks streamed here are dropped.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            let drain = async move { while rx.recv().await.is_some() {} };
            let fetch = async move { self.stream_value(&found, &tx).await };
            let (fetched, ()) = tokio::join!(fetch, drain);
            fetched?;
        }
        self.put(to, options, hash, size).await
    }

    /// [`ObjectSpace::put_value`] without the metrics (P³'s own objects:
    /// the namespace list, index shards, are not a client's puts).
    pub(crate) async fn put_small(
        &self,
        path: &ObjectPath,
        bytes: Vec<u8>,
        options: PutOptions,
    ) -> Result<Written> {
        let size = bytes.len() as u64;
        if options.volatile && size > VOLATILE_MAX {
            return Err(volatile_too_large(size));
        }
        if size > INLINE_MAX {
            let mut ingest = self.ingest();
            let (hash, size, _pin) = blocking(move || {
                ingest.push(&bytes)?;
                ingest.finish()
            })
            .await?;
            return self.put(path, options, hash, size).await;
        }
        check_meta(&options)?;
        let (op, conditions) = put_op(BlobHash::of(&bytes), size, options);
        self.submit(path, op, conditions, Some(bytes)).await
    }

    /// Removes `path` (only at version `if_version`, if given; under the write
    /// lock with fencing token `token`, if given).
    pub async fn remove(
        &self,
        path: &ObjectPath,
        if_version: Option<u64>,
        token: Option<u64>,
    ) -> Result<Written> {
        crate::metrics::observe("remove", async {
            self.submit(path, WriteOp::Remove, (if_version, token), None)
                .await
        })
        .await
    }

    /// Sends a write to the key's primary, following redirects and skipping
    /// owners that cannot be reached.
    async fn submit(
        &self,
        path: &ObjectPath,
        op: WriteOp,
        (if_version, token): (Option<u64>, Option<u64>),
        inline: Option<Vec<u8>>,
    ) -> Result<Written> {
        let (ns_incarnation, owners) = self.locate(path).await?;
        // Known here once located: a namespace never becomes writer-only in
        // place, and its writes alone need the primary to come back to sign.
        let signed = (self.inner.namespaces)
            .writers(self, &path.namespace)
            .await?
            .is_some();
        let mut request = WriteRequest {
            ns: path.namespace.clone(),
            name: path.name.clone(),
            ns_incarnation,
            op,
            if_version,
            inline,
            origin: self.me_text().to_owned(),
            hops: 0,
            token,
            ticket: signed.then(rand::random),
            origin_stores: owners.contains(&self.me()),
        };
        // Until the write is answered, its primary may ask this node to sign
        // the record it made of it (writer-only namespaces).
        let _signable = self.inner.signable.hold(&request);
        let mut candidates: Vec<PeerId> = owners;
        candidates.reverse();
        let mut failures = Vec::new();
        let mut failed: Vec<PeerId> = Vec::new();
        // Whether an earlier attempt may have been applied.
        let mut unknown = false;
        while let Some(target) = candidates.pop() {
            if failed.contains(&target) {
                // A redirect back to an owner that just failed: its
                // successor is not known yet, and the caller should retry.
                continue;
            }
            let asked = std::time::Instant::now();
            match self.ask(target, PeerRequest::Write(request.clone())).await {
                Ok(PeerResponse::Written { record, acked }) => {
                    // Beside the primary's "write acknowledged": the rest
                    // is the trip to it and back.
                    tracing::debug!(
                        %path,
                        primary = %target,
                        answered_us = asked.elapsed().as_micros(),
                        "write answered"
                    );
                    return Ok(written(path, &record, acked));
                }
                Ok(PeerResponse::Ordered { record, acked }) if request.origin_stores => {
                    // This node's copy is the last one the write needs, stored
                    // as any replica of `target`'s is.
                    let inline = request.inline.take();
                    let stored = Box::pin(crate::replica::accept_replica(
                        self,
                        record.clone(),
                        inline,
                        &[target],
                        Some(target),
                    ))
                    .await;
                    if let Err(why) = crate::ordering::origin_copy(&record, &stored) {
                        return Err(SpaceError::OutcomeUnknown(format!(
                            "the write to {path} may or may not have been applied (its primary {target} ordered it and the other owners hold it, but this node, also an owner, could not: {why}); read it before retrying"
                        )));
                    }
                    return Ok(written(path, &record, acked + 1));
                }
                Ok(PeerResponse::NotPrimary(primary)) if request.hops < 3 => {
                    request.hops += 1;
                    match primary.parse::<PeerId>() {
                        Ok(p) => candidates.push(p),
                        Err(_) => failures.push(format!("{target}: bad redirect")),
                    }
                }
                Ok(other) => failures.push(format!("{target}: unexpected answer {other:?}")),
                Err(e @ (SpaceError::Unavailable(_) | SpaceError::Stopped)) => {
                    failed.push(target);
                    failures.push(format!("{target}: {e}"))
                }
                Err(e @ SpaceError::OutcomeUnknown(_)) => {
                    unknown = true;
                    failed.push(target);
                    failures.push(format!("{target}: {e}"))
                }
                // An owner may have applied the write before its answer was
                // lost: the conflict (or, for a removal, the absence) may be
                // the write itself.
                Err(SpaceError::VersionConflict { .. } | SpaceError::NotFound(_)) if unknown => {
                    return Err(may_or_may_not(path, &failures))
                }
                Err(e) => return Err(e),
            }
        }
        if unknown {
            return Err(may_or_may_not(path, &failures));
        }
        Err(SpaceError::Unavailable(format!(
            "no owner of {path} took the write: {}",
            failures.join("; ")
        )))
    }
}

/// The client's answer for `record`, held by `acked` owners.
fn written(path: &ObjectPath, record: &ObjectRecord, acked: usize) -> Written {
    Written {
        path: path.to_string(),
        version: record.version,
        hash: record.blob.map(|b| b.to_string()).unwrap_or_default(),
        size: record.size,
        acked_by: acked,
    }
}

/// The answer to a client whose write may have been applied.
fn may_or_may_not(path: &ObjectPath, failures: &[String]) -> SpaceError {
    SpaceError::OutcomeUnknown(format!(
        "the write to {path} may or may not have been applied ({}); read it before retrying",
        failures.join("; ")
    ))
}
