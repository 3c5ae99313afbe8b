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
pub mod held;
pub mod mux;
pub mod protocol;
pub mod server;
pub mod values;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use client::{Space, Watching};
pub use held::HeldLock;
pub use values::Piece;

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

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    // The length and the body in one write: on a yamux channel each write
    // is a frame of its own.
    let mut frame = vec![0u8; 4];
    ciborium::into_writer(value, &mut frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` if the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    io: &mut R,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    ciborium::from_reader(body.as_slice())
        .map(Some)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &protocol::Request::Closest { key: b"k".to_vec() })
            .await
            .unwrap();
        let got: protocol::Request = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got, protocol::Request::Closest { key: b"k".to_vec() });

        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame::<_, protocol::Request>(&mut b)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let err = read_frame::<_, protocol::Request>(&mut b)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)));
        drop(a);
        assert!(read_frame::<_, protocol::Request>(&mut b)
            .await
            .unwrap()
            .is_none());
    }
}
