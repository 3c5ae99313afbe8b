//! Frames of the local API: a 4-byte big-endian length, then that many bytes
//! of CBOR.
//!
//! A value's bytes travel in `Data` frames of up to 1 MiB, and those skip the
//! CBOR library both ways. ciborium decodes a byte string by appending it to
//! an empty `Vec` 4 KiB at a time: every 1 MiB frame regrew its buffer from
//! nothing (about 2 MiB copied, in freshly faulted pages), and encoding grew
//! another from 4 bytes. A 1 GiB `p3ctl get` spent 1.7 s of CPU in the client,
//! most of it in page faults under those copies. The bytes on the wire are
//! the same CBOR as before: `{"Data": <byte string>}`.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    protocol::{Hello, Request, Response},
    FrameError, MAX_FRAME,
};
use crate::buffers;

/// A message of the API, as read by [`read_frame`].
pub trait Message: Serialize + DeserializeOwned {
    /// The message's variant `Data(bytes)`, for messages that have one.
    const DATA: Option<fn(Vec<u8>) -> Self> = None;
}

impl Message for Hello {}

impl Message for Request {
    const DATA: Option<fn(Vec<u8>) -> Self> = Some(Request::Data);
}

impl Message for Response {
    const DATA: Option<fn(Vec<u8>) -> Self> = Some(Response::Data);
}

/// How serde and ciborium encode a newtype variant named `Data`: a map of one
/// entry whose key is the text "Data". Its value, the byte string, follows.
const DATA_KEY: [u8; 6] = [0xA1, 0x64, b'D', b'a', b't', b'a'];

/// Longest CBOR header of a byte string (major type 2, 8-byte length).
const BYTES_HEADER_MAX: usize = 9;

/// The CBOR header of a byte string of `len` bytes, in its shortest form (as
/// ciborium writes it).
fn bytes_header(len: usize) -> ([u8; BYTES_HEADER_MAX], usize) {
    let mut header = [0u8; BYTES_HEADER_MAX];
    let len = len as u64;
    let used = if len < 24 {
        header[0] = 0x40 | len as u8;
        1
    } else if len <= 0xFF {
        header[0] = 0x58;
        header[1] = len as u8;
        2
    } else if len <= 0xFFFF {
        header[0] = 0x59;
        header[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        3
    } else if len <= 0xFFFF_FFFF {
        header[0] = 0x5A;
        header[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        5
    } else {
        header[0] = 0x5B;
        header[1..9].copy_from_slice(&len.to_be_bytes());
        9
    };
    (header, used)
}

/// The length a byte-string header at the start of `bytes` announces, and the
/// header's own length; `None` if `bytes` does not start with a whole one.
fn parse_bytes_header(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let extra = match first {
        0x40..=0x57 => return Some((u64::from(first & 0x1F), 1)),
        0x58 => 1,
        0x59 => 2,
        0x5A => 4,
        0x5B => 8,
        _ => return None,
    };
    let field = bytes.get(1..1 + extra)?;
    let len = field.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    Some((len, 1 + extra))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    let mut frames = Frames::default();
    frames.push(value)?;
    frames.send(io).await
}

/// Frames gathered to go out in one write. On a channel each write is a
/// yamux frame of its own, and each costs a send on the node and a read and
/// a wakeup on the client: a small value's answer (its record, its bytes,
/// its end) written as one takes one of each instead of three.
#[derive(Default)]
pub struct Frames(Vec<u8>);

impl Frames {
    /// Appends the frame of `value`.
    pub fn push<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        ciborium::into_writer(value, &mut self.0)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        self.seal(start)
    }

    /// Appends the frame of `Data(bytes)` (a [`Request`] and a [`Response`]
    /// encode it alike) without passing the bytes through the CBOR encoder.
    pub fn push_data(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let (head, used) = data_head(bytes.len())?;
        self.0.reserve(used + bytes.len());
        self.0.extend_from_slice(&head[..used]);
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes the length of the frame that begins at `start` into its first
    /// four bytes (or takes the frame back, if it is too long).
    fn seal(&mut self, start: usize) -> Result<(), FrameError> {
        let len = self.0.len() - start - 4;
        if len > MAX_FRAME {
            self.0.truncate(start);
            return Err(FrameError::TooLarge(len));
        }
        self.0[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Writes every frame gathered, in one write.
    pub async fn send<W: AsyncWrite + Unpin>(self, io: &mut W) -> Result<(), FrameError> {
        io.write_all(&self.0).await?;
        io.flush().await?;
        Ok(())
    }
}

/// What goes before the `len` bytes of a `Data` frame: the frame's length,
/// the variant's key and the byte string's header; and how much of it.
fn data_head(
    len: usize,
) -> Result<([u8; 4 + DATA_KEY.len() + BYTES_HEADER_MAX], usize), FrameError> {
    let (header, used) = bytes_header(len);
    let head_len = 4 + DATA_KEY.len() + used;
    let frame_len = head_len - 4 + len;
    if frame_len > MAX_FRAME {
        return Err(FrameError::TooLarge(frame_len));
    }
    let mut head = [0u8; 4 + DATA_KEY.len() + BYTES_HEADER_MAX];
    head[..4].copy_from_slice(&(frame_len as u32).to_be_bytes());
    head[4..4 + DATA_KEY.len()].copy_from_slice(&DATA_KEY);
    head[4 + DATA_KEY.len()..head_len].copy_from_slice(&header[..used]);
    Ok((head, head_len))
}

/// Writes the frame of `Data(bytes)` (a [`Request`] and a [`Response`] encode
/// it alike) without passing the bytes through the CBOR encoder.
pub async fn write_data<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() < SEPARATE_BODY {
        let mut frames = Frames::default();
        frames.push_data(bytes)?;
        return frames.send(io).await;
    }
    // A large body goes out as it is, after its header: copying 1 MiB into
    // one buffer with the header cost more than the extra channel frame.
    let (head, used) = data_head(bytes.len())?;
    io.write_all(&head[..used]).await?;
    io.write_all(bytes).await?;
    io.flush().await?;
    Ok(())
}

/// `Data` bodies from this size are written apart from their header.
const SEPARATE_BODY: usize = 64 << 10;

/// Reads one frame; `Ok(None)` if the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: Message>(
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
    // Enough of the body to tell a `Data` frame and where its bytes begin.
    let mut head = [0u8; DATA_KEY.len() + BYTES_HEADER_MAX];
    let head_len = len.min(head.len());
    io.read_exact(&mut head[..head_len]).await?;
    let head = &head[..head_len];
    if let (Some(data), Some(at)) = (T::DATA, data_start(head, len)) {
        let mut bytes = buffers::filled(len - at);
        let had = head_len - at;
        bytes[..had].copy_from_slice(&head[at..]);
        io.read_exact(&mut bytes[had..]).await?;
        return Ok(Some(data(bytes)));
    }
    let mut body = buffers::filled(len);
    body[..head_len].copy_from_slice(head);
    io.read_exact(&mut body[head_len..]).await?;
    let message = ciborium::from_reader(body.as_slice())
        .map(Some)
        .map_err(|e| FrameError::Malformed(e.to_string()));
    buffers::give_back(body);
    message
}

/// Where the bytes of a `Data` frame of `len` bytes begin, judged by its
/// first bytes `head`; `None` if it is some other message (or not a
/// well-formed `Data` frame, which the CBOR decoder will then refuse).
fn data_start(head: &[u8], len: usize) -> Option<usize> {
    let rest = head.strip_prefix(&DATA_KEY)?;
    let (bytes, header) = parse_bytes_header(rest)?;
    let at = DATA_KEY.len() + header;
    (bytes == (len - at) as u64).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
        let mut body = Vec::new();
        ciborium::into_writer(value, &mut body).unwrap();
        body
    }

    /// Lengths at every boundary of CBOR's length encodings.
    const LENGTHS: [usize; 10] = [
        0,
        1,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        1 << 20,
        (1 << 20) + 3,
    ];

    #[tokio::test]
    async fn data_frames_are_the_cbor_the_encoder_writes() {
        for len in LENGTHS {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut fast = Vec::new();
            write_data(&mut fast, &bytes).await.unwrap();
            let mut general = Vec::new();
            write_frame(&mut general, &Response::Data(bytes.clone()))
                .await
                .unwrap();
            assert_eq!(fast, general, "frame of {len} bytes");
            assert_eq!(&fast[4..], cbor(&Request::Data(bytes)).as_slice());
        }
    }

    #[tokio::test]
    async fn data_frames_read_back_whole() {
        for len in LENGTHS {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut wire = Vec::new();
            write_data(&mut wire, &bytes).await.unwrap();
            write_frame(&mut wire, &Response::End).await.unwrap();
            let mut reader = wire.as_slice();
            let got: Option<Response> = read_frame(&mut reader).await.unwrap();
            assert_eq!(got, Some(Response::Data(bytes.clone())), "{len} bytes");
            let got: Option<Response> = read_frame(&mut reader).await.unwrap();
            assert_eq!(got, Some(Response::End));
            let got: Option<Request> = read_frame(&mut wire.as_slice()).await.unwrap();
            assert_eq!(got, Some(Request::Data(bytes)));
        }
    }

    #[tokio::test]
    async fn frames_read_into_reused_buffers_hold_only_their_own_bytes() {
        const FRAMES: [(usize, u8); 3] = [(1 << 20, 0xAA), (100_000, 0x55), ((1 << 20) + 3, 0x11)];
        let mut wire = Vec::new();
        for (len, byte) in FRAMES {
            write_data(&mut wire, &vec![byte; len]).await.unwrap();
        }
        let mut reader = wire.as_slice();
        for (len, byte) in FRAMES {
            let Some(Response::Data(bytes)) = read_frame(&mut reader).await.unwrap() else {
                panic!("not a data frame");
            };
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == byte), "{len} bytes of {byte:#x}");
            buffers::give_back(bytes);
        }
    }

    #[tokio::test]
    async fn a_data_frame_whose_length_disagrees_is_refused() {
        // The byte string claims 10 bytes; the frame holds 4.
        let mut body = DATA_KEY.to_vec();
        body.extend_from_slice(&[0x4A, 1, 2, 3, 4]);
        let mut wire = (body.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        let err = read_frame::<_, Response>(&mut wire.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn byte_string_headers_parse_back() {
        for len in LENGTHS
            .into_iter()
            .chain([u32::MAX as usize, u32::MAX as usize + 1])
        {
            let (header, used) = bytes_header(len);
            assert_eq!(
                parse_bytes_header(&header[..used]),
                Some((len as u64, used))
            );
            if used > 1 {
                assert_eq!(parse_bytes_header(&header[..used - 1]), None, "cut short");
            }
        }
        assert_eq!(parse_bytes_header(&[0x60]), None, "a text string");
    }

    #[tokio::test]
    async fn gathered_frames_are_the_frames_written_one_by_one() {
        let bytes: Vec<u8> = (0..1000).map(|i| (i % 7) as u8).collect();
        let mut one_by_one = Vec::new();
        write_frame(&mut one_by_one, &Response::Done).await.unwrap();
        write_data(&mut one_by_one, &bytes).await.unwrap();
        write_frame(&mut one_by_one, &Response::End).await.unwrap();

        let mut frames = Frames::default();
        frames.push(&Response::Done).unwrap();
        frames.push_data(&bytes).unwrap();
        // Refused, and leaves what was gathered as it was.
        let huge = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(
            frames.push_data(&huge),
            Err(FrameError::TooLarge(_))
        ));
        frames.push(&Response::End).unwrap();
        let mut gathered = Vec::new();
        frames.send(&mut gathered).await.unwrap();
        assert_eq!(gathered, one_by_one);
    }

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &Request::Closest { key: b"k".to_vec() })
            .await
            .unwrap();
        let got: Request = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got, Request::Closest { key: b"k".to_vec() });

        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame::<_, Request>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let err = read_frame::<_, Request>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)));
        drop(a);
        assert!(read_frame::<_, Request>(&mut b).await.unwrap().is_none());
    }
}
