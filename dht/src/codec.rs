//! The request-response codec for object-space RPC.
//!
//! One request and one response per stream; the body is CBOR written by the layer
//! above (see [`crate::Node::request`]). The codec's job is the limit: it reads at
//! most the configured number of bytes and refuses anything larger, so a peer can
//! never make this node buffer more than that.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// Size-limited codec for opaque CBOR bodies.
#[derive(Debug, Clone)]
pub(crate) struct LimitedCodec {
    pub max_request: u64,
    pub max_response: u64,
}

async fn read_limited<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: u64,
    what: &str,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max + 1).read_to_end(&mut buf).await?;
    // No CBOR value is empty: an empty body is a peer that closed the stream
    // instead of answering (e.g. because it refused our request).
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("peer closed the stream without a {what}"),
        ));
    }
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} larger than the {max}-byte limit"),
        ));
    }
    Ok(buf)
}

async fn write_all<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    io.write_all(body).await?;
    io.close().await
}

impl request_response::Codec for LimitedCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_request, "request").await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_response, "response").await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let mut codec = LimitedCodec {
            max_request: 8,
            max_response: 4,
        };
        let proto = StreamProtocol::new(crate::RPC_PROTOCOL);
        let ok = codec
            .read_request(&proto, &mut Cursor::new(vec![1u8; 8]))
            .await
            .unwrap();
        assert_eq!(ok.len(), 8);
        let err = codec
            .read_request(&proto, &mut Cursor::new(vec![1u8; 9]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = codec
            .read_response(&proto, &mut Cursor::new(vec![1u8; 5]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("4-byte limit"));
        let err = codec
            .read_response(&proto, &mut Cursor::new(Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
