//! Values a client writes through the local API: streamed in data frames
//! after the node said `Ready`, or whole inside the request when small.

use super::check_put;
use crate::{
    api::{
        mux::Channel,
        protocol::{Request, Response, Written, DATA_FRAME, WHOLE_MAX},
        read_frame, write_frame, FrameError,
    },
    buffers,
    error::{Result, SpaceError},
    name::ObjectPath,
    object::{PutOptions, VOLATILE_MAX},
    space::ObjectSpace,
    write::{volatile_too_large, Ingest},
};

/// A frame of a value being sent.
enum ValueFrame {
    /// More of its bytes.
    Data(Vec<u8>),
    /// Its end, with the options it ends with if they changed.
    End(Option<PutOptions>),
}

/// The next frame of a value, or `None` if the client went away. Any other
/// request mid-value is answered with an error and ends the session.
async fn value_frame(stream: &mut Channel) -> Result<Option<ValueFrame>, FrameError> {
    match read_frame::<_, Request>(stream).await? {
        Some(Request::Data(bytes)) if bytes.len() <= DATA_FRAME => {
            Ok(Some(ValueFrame::Data(bytes)))
        }
        Some(Request::End) => Ok(Some(ValueFrame::End(None))),
        Some(Request::EndWith(last)) => Ok(Some(ValueFrame::End(Some(last)))),
        Some(_) => {
            let e = SpaceError::Invalid("expected the value's data frames".into());
            write_frame(stream, &Response::Error(e)).await?;
            Err(FrameError::Malformed("unexpected frame in a value".into()))
        }
        None => Ok(None),
    }
}

/// Receives a value and writes it. Checks that need no value happen before the
/// client sends it; a failure while it arrives is answered after its end.
pub(super) async fn put(
    stream: &mut Channel,
    space: &ObjectSpace,
    path: &str,
    options: PutOptions,
    size: Option<u64>,
) -> Result<(), FrameError> {
    let path = match check_put(space, path, &options, size).await {
        Ok(path) => path,
        Err(e) => return write_frame(stream, &Response::Error(e)).await,
    };
    write_frame(stream, &Response::Ready).await?;
    if options.volatile {
        return put_volatile(stream, space, &path, options).await;
    }
    // After a failure the rest of the value is read and dropped.
    let mut ingest: Result<Ingest> = Ok(space.ingest());
    let mut options = options;
    loop {
        match value_frame(stream).await? {
            Some(ValueFrame::Data(bytes)) => {
                if let Ok(open) = ingest.as_mut() {
                    if let Err(e) = tokio::task::block_in_place(|| open.push(&bytes)) {
                        ingest = Err(e);
                    }
                }
                buffers::give_back(bytes);
            }
            Some(ValueFrame::End(None)) => break,
            Some(ValueFrame::End(Some(last))) => {
                if last.volatile {
                    ingest = Err(SpaceError::Invalid(
                        "a durable value cannot end as a volatile one".into(),
                    ));
                }
                options = last;
                break;
            }
            None => return Ok(()), // the client went away mid-value
        }
    }
    let written = match ingest.and_then(|ingest| tokio::task::block_in_place(|| ingest.finish())) {
        Ok((hash, size, _pin)) => space.put(&path, options, hash, size).await,
        Err(e) => Err(e),
    };
    let answer = written.map_or_else(Response::Error, Response::Written);
    write_frame(stream, &answer).await
}

/// Writes a value that came whole with its request.
pub(super) async fn put_whole(
    space: &ObjectSpace,
    path: &str,
    options: PutOptions,
    value: Vec<u8>,
) -> Result<Written> {
    let path = check_put(space, path, &options, Some(value.len() as u64)).await?;
    if value.len() > WHOLE_MAX {
        return Err(SpaceError::Invalid(format!(
            "a value of {} bytes sent whole; values over {WHOLE_MAX} bytes are streamed",
            value.len()
        )));
    }
    space.put_value(&path, value, options).await
}

/// Receives a volatile value into memory (it is small) and writes it: it
/// never touches this node's disk.
async fn put_volatile(
    stream: &mut Channel,
    space: &ObjectSpace,
    path: &ObjectPath,
    mut options: PutOptions,
) -> Result<(), FrameError> {
    let mut value = Vec::new();
    let mut refused = None;
    loop {
        match value_frame(stream).await? {
            Some(ValueFrame::Data(bytes)) => {
                if refused.is_none() {
                    value.extend_from_slice(&bytes);
                    if value.len() as u64 > VOLATILE_MAX {
                        refused = Some(value.len() as u64);
                        value = Vec::new();
                    }
                }
                buffers::give_back(bytes);
            }
            Some(ValueFrame::End(None)) => break,
            Some(ValueFrame::End(Some(last))) => {
                if !last.volatile {
                    let e =
                        SpaceError::Invalid("a volatile value cannot end as a durable one".into());
                    return write_frame(stream, &Response::Error(e)).await;
                }
                options = last;
                break;
            }
            None => return Ok(()),
        }
    }
    let written = match refused {
        Some(size) => Err(volatile_too_large(size)),
        None => space.put_value(path, value, options).await,
    };
    let answer = written.map_or_else(Response::Error, Response::Written);
    write_frame(stream, &answer).await
}
