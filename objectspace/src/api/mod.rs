//! The local API: how client commands (and Rust programs, through [`Space`]) talk
//! to the node running on a data directory.
//!
//! Transport: TCP on `127.0.0.1`, an ephemeral port. The node writes the address
//! and a fresh random token to `DATA_DIR/api.json` (mode 0600) at start; only
//! someone who can read that file can use the API. Wire format: frames of a 4-byte
//! big-endian length followed by that many bytes of CBOR, at most [`MAX_FRAME`].
//! The first frame from the client is a [`protocol::Hello`] carrying the token;
//! then requests and answers as [`protocol`] describes.

pub mod client;
pub mod frame;
pub mod held;
pub mod mux;
pub mod protocol;
pub mod server;
pub mod values;

use serde::{Deserialize, Serialize};

pub use client::{Space, Watching};
pub use frame::{read_frame, write_data, write_frame, Frames, Message};
pub use held::HeldLock;
pub use values::{Incoming, Piece};

/// Name of the file in the data directory that says where the API listens.
pub const API_FILE: &str = "api.json";

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;

/// What `api.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiInfo {
    /// `127.0.0.1:PORT` of the API listener.
    pub addr: String,
    /// The access token (hex).
    pub token: String,
    /// Process id of the node, for people and scripts.
    pub pid: u32,
    /// `IP:PORT` of the node's HTTP API, metrics and dashboard, if it serves
    /// them (the same token admits a client).
    #[serde(default)]
    pub http: Option<String>,
}

/// Framing failures, worded for whoever sees them.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection to the node failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame larger than [`MAX_FRAME`] was announced.
    #[error("message of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The bytes were not CBOR of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
}
