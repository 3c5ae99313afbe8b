//! Spool files made and thrown away off the FUSE thread. Creating a
//! temporary file and deleting it are filesystem work (the local filesystem
//! allocates and frees an inode each time) that `tar -x` would otherwise wait
//! for on every file it writes; a helper thread keeps a few empty ones ready
//! and another closes the used ones.

use std::{
    fs::File,
    io,
    sync::mpsc::{channel, sync_channel, Receiver, Sender},
    thread,
};

/// Empty spool files kept ready.
const SPARE: usize = 4;

/// Where spool files come from and go to.
pub struct SpoolFiles {
    spare: Receiver<File>,
    used: Sender<File>,
}

impl SpoolFiles {
    /// Starts the two helper threads; they end with this value.
    pub fn start() -> io::Result<Self> {
        let (ready, spare) = sync_channel(SPARE);
        let (used, discarded) = channel::<File>();
        thread::Builder::new()
            .name("p3-mount-spools".into())
            .spawn(move || {
                // Ends when the mount drops its receiver (a send fails) or
                // files cannot be made (`take` then makes one itself and
                // reports why).
                while let Ok(file) = tempfile::tempfile() {
                    if ready.send(file).is_err() {
                        return;
                    }
                }
            })?;
        thread::Builder::new()
            .name("p3-mount-discard".into())
            .spawn(move || discarded.into_iter().for_each(drop))?;
        Ok(Self { spare, used })
    }

    /// An empty temporary file: a ready one, or a new one if none is.
    pub fn take(&self) -> io::Result<File> {
        match self.spare.try_recv() {
            Ok(file) => Ok(file),
            Err(_) => tempfile::tempfile(),
        }
    }

    /// Closes `file` (deleting it) on the helper thread.
    pub fn discard(&self, file: File) {
        // The helper is gone only if it panicked: close it here then.
        if let Err(unsent) = self.used.send(file) {
            drop(unsent.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use super::*;

    #[test]
    fn files_taken_are_empty_and_separate() {
        let files = SpoolFiles::start().expect("helpers");
        let mut taken: Vec<File> = (0..SPARE * 3)
            .map(|_| files.take().expect("a spool file"))
            .collect();
        for (i, file) in taken.iter_mut().enumerate() {
            assert_eq!(file.metadata().unwrap().len(), 0);
            write!(file, "file {i}").unwrap();
        }
        for (i, file) in taken.iter_mut().enumerate() {
            let mut text = String::new();
            file.rewind().unwrap();
            file.read_to_string(&mut text).unwrap();
            assert_eq!(text, format!("file {i}"), "no two share a file");
        }
        taken.into_iter().for_each(|file| files.discard(file));
    }
}
