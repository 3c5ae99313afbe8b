//! Open files. A file opened for reading streams its object from the node as
//! the kernel asks for it ([`reader`]); a file opened for writing is a spool
//! file on local disk that becomes the object's next version, whole, when the
//! file is flushed (closed) or fsync'd ([`spool`]); a new file written in
//! order is sent while it is written, and its close only ends the put
//! ([`stream`]). Both do their network
//! work on the runtime, off the FUSE thread, and answer the kernel from
//! there: a large value being read or sent holds up no other request.

pub mod files;
pub mod reader;
pub mod spool;
pub mod stream;

use p3_objectspace::object::{PutOptions, Stat};

pub use files::SpoolFiles;
pub use reader::Reads;
pub use spool::Spool;

/// An open file.
pub enum Handle {
    /// Opened read-only.
    Read(Reads),
    /// Opened for writing (reads see what was written).
    Write(Spool),
}

/// The options of a new version that keeps `stat`'s type and metadata.
pub fn keeping(stat: &Stat) -> PutOptions {
    PutOptions {
        type_tag: stat.type_tag.clone(),
        meta: stat.meta.clone(),
        volatile: stat.volatile,
        ..PutOptions::default()
    }
}
