//! A file being written: its bytes in a spool file on local disk until they
//! are sent, whole, as the object's next version (or, for a new file written
//! in order, sent while they are written: [`super::stream`]). Sends run on the runtime,
//! one at a time per file, newest last: each is numbered by the change it
//! carries, and one that finds a later change already sent has nothing to do.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use p3_objectspace::object::{PutOptions, Stat};

use super::{
    keeping,
    stream::{Stream, Streaming},
};
use crate::{
    client::{local, Node, Result},
    posix::{self, Change},
};

/// How far a spool's changes got: each change is numbered, and a send
/// records the number it carried. Shared with the sends in flight.
#[derive(Default)]
struct Progress {
    /// The latest change (0: none since the spool was filled).
    changed: AtomicU64,
    /// The latest change to the bytes.
    written: AtomicU64,
    /// The latest change sent.
    sent: AtomicU64,
    /// Held while a send is in flight (and while the file is renamed).
    sending: Arc<tokio::sync::Mutex<()>>,
    /// The object the file is now: a send reads it when it runs, so one that
    /// waited while the file was renamed goes to the new name.
    object: std::sync::Mutex<String>,
}

impl Progress {
    fn object(&self) -> String {
        self.object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_object(&self, object: String) {
        *self.object.lock().unwrap_or_else(|e| e.into_inner()) = object;
    }
}

/// A file open for writing.
pub struct Spool {
    /// The bytes.
    pub file: File,
    /// The version it started from (its type and metadata are kept).
    pub base: Option<Stat>,
    /// Whether its bytes are new content rather than a copy of `base`'s:
    /// then the version it becomes gets its own modification time.
    pub new_content: bool,
    /// Attributes set while it is open, applied when it is sent.
    pub posix: Change,
    progress: Arc<Progress>,
    streaming: Streaming,
}

impl Spool {
    /// An empty spool in `file` (an empty temporary file, see
    /// [`super::SpoolFiles`]): a new (or truncated) file, to be sent when its
    /// last descriptor closes even if nothing is written to it.
    pub fn empty(file: File, base: Option<Stat>) -> Self {
        let spool = Self {
            file,
            base,
            new_content: true,
            posix: Change::default(),
            progress: Arc::default(),
            streaming: Streaming::Off,
        };
        spool.progress.changed.store(1, Ordering::SeqCst);
        spool
    }

    /// This spool, filled with `base`'s bytes: nothing to send yet.
    pub fn filled_from(mut self, base: Stat) -> Self {
        self.base = Some(base);
        self.new_content = false;
        self.progress = Arc::default();
        self
    }

    /// Sends it to the space as `object` through `node` while it is
    /// written, if it is written in order from its start.
    pub fn streamed(mut self, node: Node, object: String) -> Self {
        self.stream_to(node, object);
        self
    }

    /// [`Spool::streamed`] for a spool that is empty now: a file opened
    /// without `O_TRUNC` and then cut to nothing (the kernel opens an
    /// existing file that way for `O_TRUNC`) is new content from its start.
    pub fn stream_to(&mut self, node: Node, object: String) {
        self.streaming = Streaming::new(node, object);
    }

    /// Holds this file's sends until the guard is dropped: a rename must
    /// not run while a send to the old name is in flight (it would copy the
    /// old version, or the send would bring the old name back).
    pub fn hold_sends(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.progress.sending.clone().blocking_lock_owned()
    }

    /// The file was renamed to `object` while open: later sends go there. A
    /// stream goes to the object it began as, so it is abandoned and the file
    /// is sent whole under its new name.
    pub fn moved(&mut self, object: String) {
        self.progress.set_object(object);
        self.streaming = Streaming::Off;
    }

    fn change(&self) -> u64 {
        self.progress.changed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Its attributes changed (see [`Spool::posix`]).
    pub fn touched(&self) {
        self.change();
    }

    fn written(&mut self) {
        let change = self.change();
        self.progress.written.store(change, Ordering::SeqCst);
        self.new_content = true;
    }

    /// Bytes at `offset`.
    pub fn read(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            let n = self
                .file
                .read_at(&mut bytes[filled..], offset + filled as u64)
                .map_err(local)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        bytes.truncate(filled);
        Ok(bytes)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(local)?;
        self.written();
        let mut streaming = std::mem::replace(&mut self.streaming, Streaming::Off);
        streaming.wrote(offset, data, &self.file, || self.options());
        self.streaming = streaming;
        Ok(())
    }

    /// Cuts or extends to `size` bytes.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        self.file.set_len(size).map_err(local)?;
        self.written();
        self.streaming.resized(size);
        Ok(())
    }

    /// Its size now.
    pub fn size(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(local)?.len())
    }

    /// The options of the version it becomes: `base`'s type and metadata,
    /// the attributes set meanwhile, and a new modification time for new
    /// content.
    pub fn options(&self) -> PutOptions {
        let mut options = self.base.as_ref().map_or_else(PutOptions::default, keeping);
        if self.new_content {
            posix::content_changed(&mut options.meta);
        }
        self.posix.apply(&mut options.meta);
        options
    }

    /// What sending it as `object`'s next version takes, unless there is
    /// nothing to send. On a close (`closing`) only bytes written since the
    /// last send are sent: a new file nobody wrote to yet is sent when its
    /// last descriptor closes, so a shell's `> f` (open, dup, close, write,
    /// close) never shows an empty version first.
    ///
    /// A stream in progress ends with this send: bytes written after it are
    /// sent whole, with the next one.
    pub fn upload(&mut self, object: String, closing: bool) -> Result<Option<Upload>> {
        let progress = &self.progress;
        let change = progress.changed.load(Ordering::SeqCst);
        if !needs_send(progress, change, closing) {
            return Ok(None);
        }
        progress.set_object(object);
        Ok(Some(Upload {
            file: self.file.try_clone().map_err(local)?,
            options: self.options(),
            change,
            closing,
            progress: progress.clone(),
            stream: self.streaming.take(),
        }))
    }
}

/// Whether a send of change `change` has something to carry.
fn needs_send(progress: &Progress, change: u64, closing: bool) -> bool {
    let sent = progress.sent.load(Ordering::SeqCst);
    change > sent && !(closing && progress.written.load(Ordering::SeqCst) <= sent)
}

/// A spool's bytes and attributes on their way to the space.
pub struct Upload {
    file: File,
    options: PutOptions,
    change: u64,
    closing: bool,
    progress: Arc<Progress>,
    stream: Option<Stream>,
}

impl Upload {
    /// Sends it through `node`, after the sends of the same file before it,
    /// unless one of them already carried this change or a later one.
    /// `stored` is told the object it wrote before the next send or rename
    /// of the file may run: a rename that waited for this send must not
    /// decide from a cache that still says the object does not exist (it
    /// would leave the old name behind; a flush from another process, such
    /// as a child closing an inherited descriptor, does not wait for us).
    pub async fn run(self, node: &Node, stored: impl FnOnce(&str)) -> Result<()> {
        let progress = &self.progress;
        let _turn = progress.sending.lock().await;
        if !needs_send(progress, self.change, self.closing) {
            return Ok(());
        }
        let size = self.file.metadata().map_err(local)?.len();
        let object = progress.object();
        let put = match self.stream {
            // Every byte of the file went into the stream, in order, and the
            // file still has the name the stream began with.
            Some(stream) if stream.sent() == size && stream.object() == object => {
                stream.finish(self.options).await
            }
            // (Dropped, a stream ends unfinished: nothing of it is written.)
            _ => node
                .put_file(&object, &self.options, &self.file)
                .await
                .map(drop),
        };
        // Even a failed put may have been stored.
        stored(&object);
        put?;
        progress.sent.fetch_max(self.change, Ordering::SeqCst);
        Ok(())
    }
}
