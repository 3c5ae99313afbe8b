//! take (Linda's `in`): read and remove an object in one step; of any number of
//! concurrent takers exactly one gets it.
//!
//! A taker first makes sure its own node holds the value (pinned, so nothing can
//! evict it), then removes the object on condition that it is still the version
//! it read. The primary orders conditional writes one at a time, so exactly one
//! of the removals succeeds; the other takers find the object gone or changed and
//! read again — and, if they may wait, wait for the next version.

use std::time::{Duration, Instant};

use crate::{
    error::{Result, SpaceError},
    name::ObjectPath,
    read::Found,
    space::ObjectSpace,
    store::Pin,
    transfer::{self, blocking},
};

/// An object this node took: its last version and a hold on its value.
pub struct Taken {
    /// The record as it was when taken, and where its value is.
    pub found: Found,
    _pin: Option<Pin>,
}

impl ObjectSpace {
    /// Takes `path`, waiting up to `wait` for it to exist.
    pub async fn take(&self, path: &ObjectPath, wait: Option<Duration>) -> Result<Taken> {
        crate::metrics::observe("take", async {
            let deadline = wait.map(|w| Instant::now() + w);
            loop {
                let found = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        self.find_newer(path, None, left).await?
                    }
                    None => self.find(path, true).await?,
                };
                let pin = self.hold_value(&found).await?;
                match self.remove(path, Some(found.record.version), None).await {
                    Ok(_) => return Ok(Taken { found, _pin: pin }),
                    // Another taker was first, or a writer changed it: read again.
                    Err(SpaceError::VersionConflict { .. } | SpaceError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }

    /// Makes sure the value of `found` is on this node (small values come with
    /// the answer and need nothing).
    async fn hold_value(&self, found: &Found) -> Result<Option<Pin>> {
        let Some(hash) = found.record.blob else {
            return Ok(None);
        };
        if found.inline.is_some() {
            return Ok(None);
        }
        let store = self.store().clone();
        let pin = store.pin(hash);
        let check = store.clone();
        if blocking(move || check.has_blob(&hash)).await? {
            return Ok(Some(pin));
        }
        let sources: Vec<_> = found
            .holders
            .iter()
            .copied()
            .filter(|p| *p != self.me())
            .collect();
        let (_, fetched) = transfer::fetch(self.node(), &store, hash, &sources, None).await?;
        self.announce(hash, found.record.size);
        drop(pin);
        Ok(Some(fetched))
    }
}
