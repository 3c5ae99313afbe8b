//! Objects: put (streamed in), get and take (streamed out, with `Range`), head,
//! stat, remove, list and search.

use axum::{
    body::{Body, BodyDataStream, Bytes},
    extract::{Path, Query},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures::StreamExt;
use p3_objectspace::{
    api::{
        protocol::{Request, Response as Answer, Wait, Written},
        server,
    },
    object::{MetaValue, Metadata, PutOptions, Stat, VOLATILE_MAX},
    read::Found,
    take::Taken,
    write::volatile_too_large,
    ObjectSpace,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    error::{ApiError, Result},
    State,
};

/// `{ns}/{*name}` of a route.
#[derive(Deserialize)]
pub struct Key {
    ns: String,
    name: String,
}

impl Key {
    fn path(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// Asks the CBOR API's handler (the one implementation of the operation).
pub(crate) async fn ask(space: &ObjectSpace, request: Request) -> Result<Answer> {
    Ok(server::handle(request, space).await?)
}

/// An answer the request cannot get.
pub(crate) fn unexpected(answer: &Answer) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "failed",
        format!("unexpected answer from the node: {answer:?}"),
    )
}

/// `PUT` options from the query string.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    ttl_ms: Option<u64>,
    volatile: Option<bool>,
    token: Option<u64>,
}

/// The prefix of headers that carry metadata (`X-P3-Meta-KEY: VALUE`).
const META_PREFIX: &str = "x-p3-meta-";

/// `If-Match: "V"` → write only at version V; `If-None-Match: *` → only if
/// absent (version 0).
fn condition(headers: &HeaderMap) -> Result<Option<u64>> {
    if let Some(value) = headers.get(header::IF_MATCH) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::invalid("If-Match is not text"))?;
        let version = text.trim().trim_start_matches("W/").trim_matches('"');
        return version.parse().map(Some).map_err(|_| {
            ApiError::invalid(format!(
                "If-Match {text:?}: give the version the write expects, e.g. \"3\""
            ))
        });
    }
    match headers
        .get(header::IF_NONE_MATCH)
        .map(HeaderValue::as_bytes)
    {
        Some(b"*") => Ok(Some(0)),
        Some(_) => Err(ApiError::invalid(
            "If-None-Match: only `*` (write only if absent) is supported",
        )),
        None => Ok(None),
    }
}

fn text_header(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<String>> {
    headers
        .get(&name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid(format!("{name} is not text")))
        })
        .transpose()
}

fn metadata(headers: &HeaderMap) -> Result<Metadata> {
    let mut meta = Metadata::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid(format!("{name} is not text")))?;
        let value = match value.parse::<f64>() {
            Ok(n) if n.is_finite() => MetaValue::Num(n),
            _ => MetaValue::Str(value.to_owned()),
        };
        meta.insert(key.to_owned(), value);
    }
    Ok(meta)
}

fn body_error(e: axum::Error) -> ApiError {
    ApiError::invalid(format!("the request body broke off: {e}"))
}

/// `PUT /api/v1/objects/{ns}/{name}`: the body, streamed into the store.
pub async fn put(
    state: State,
    Path(key): Path<Key>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Written>)> {
    let space = &state.space;
    let options = PutOptions {
        type_tag: text_header(&headers, header::CONTENT_TYPE)?.unwrap_or_default(),
        meta: metadata(&headers)?,
        ttl_ms: query.ttl_ms,
        if_version: condition(&headers)?,
        token: query.token,
        volatile: query.volatile.unwrap_or(false),
    };
    let size = text_header(&headers, header::CONTENT_LENGTH)?
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| ApiError::invalid("Content-Length is not a number"))
        })
        .transpose()?;
    let mut chunks = body.into_data_stream();
    let path = match server::check_put(space, &key.path(), &options, size).await {
        Ok(path) => path,
        Err(e) => return Err(refuse(&mut chunks, e).await),
    };
    let written = if options.volatile {
        let mut value = Vec::new();
        while let Some(chunk) = chunks.next().await {
            value.extend_from_slice(&chunk.map_err(body_error)?);
            if value.len() as u64 > VOLATILE_MAX {
                let e = volatile_too_large(value.len() as u64);
                return Err(refuse(&mut chunks, e).await);
            }
        }
        space.put_value(&path, value, options).await?
    } else {
        let mut ingest = space.ingest();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(body_error)?;
            if let Err(e) = tokio::task::block_in_place(|| ingest.push(&chunk)) {
                return Err(refuse(&mut chunks, e).await);
            }
        }
        let (hash, size, _pin) = tokio::task::block_in_place(|| ingest.finish())?;
        space.put(&path, options, hash, size).await?
    };
    Ok((StatusCode::CREATED, Json(written)))
}

/// Most of a refused body read (and dropped) before the answer, and for how
/// long: see [`refuse`].
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses a write after reading and dropping what is left of its body, up
/// to [`DRAIN_BYTES`] or [`DRAIN_TIME`]: a client that sends its whole body
/// before it reads the answer would otherwise see the connection close
/// instead of the reason. Past the bound the connection closes anyway.
async fn refuse(chunks: &mut BodyDataStream, error: p3_objectspace::SpaceError) -> ApiError {
    let mut left = DRAIN_BYTES;
    let drained = async {
        while let Some(Ok(chunk)) = chunks.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    error.into()
}

/// A blocking get's query.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    wait_ms: Option<u64>,
    after_version: Option<u64>,
}

/// `GET /api/v1/objects/{ns}/{name}`: the value, streamed.
pub async fn get(
    state: State,
    Path(key): Path<Key>,
    Query(query): Query<GetQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let wait = query.wait_ms.map(|ms| Wait {
        ms,
        after_version: query.after_version,
    });
    let found = server::find(&state.space, &key.path(), wait).await?;
    send_value(&state.space, Source::Found(found), &headers)
}

/// `HEAD /api/v1/objects/{ns}/{name}`: what a stat says, as headers.
pub async fn head(state: State, Path(key): Path<Key>) -> Result<Response> {
    let stat = stat_of(&state.space, &key.path()).await?;
    let mut response = StatusCode::OK.into_response();
    describe(response.headers_mut(), &stat);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(stat.size));
    Ok(response)
}

async fn stat_of(space: &ObjectSpace, path: &str) -> Result<Stat> {
    let request = Request::Stat {
        path: path.to_owned(),
        local: false,
    };
    match ask(space, request).await? {
        Answer::Object(stat) => Ok(stat),
        other => Err(unexpected(&other)),
    }
}

/// `GET /api/v1/stat/{ns}/{name}`: the stat as JSON.
pub async fn stat(state: State, Path(key): Path<Key>) -> Result<Json<Stat>> {
    Ok(Json(stat_of(&state.space, &key.path()).await?))
}

/// A removal's options.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    token: Option<u64>,
}

/// `DELETE /api/v1/objects/{ns}/{name}`.
pub async fn remove(
    state: State,
    Path(key): Path<Key>,
    Query(query): Query<RemoveQuery>,
    headers: HeaderMap,
) -> Result<Json<Written>> {
    let request = Request::Remove {
        path: key.path(),
        if_version: condition(&headers)?,
        token: query.token,
    };
    match ask(&state.space, request).await? {
        Answer::Written(written) => Ok(Json(written)),
        other => Err(unexpected(&other)),
    }
}

/// A listing's prefix.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /api/v1/objects/{ns}?prefix=P`.
pub async fn list(
    state: State,
    Path(ns): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Stat>>> {
    let request = Request::List {
        namespace: ns,
        prefix: query.prefix,
    };
    match ask(&state.space, request).await? {
        Answer::Objects(stats) => Ok(Json(stats)),
        other => Err(unexpected(&other)),
    }
}

/// A query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: String,
    wait_ms: Option<u64>,
}

/// One search result.
#[derive(Serialize)]
pub struct Match {
    path: String,
    name: String,
    version: u64,
    #[serde(rename = "type")]
    type_tag: String,
    size: u64,
    meta: Metadata,
    expires_ms: Option<u64>,
}

/// `GET /api/v1/search/{ns}?q=QUERY`.
pub async fn search(
    state: State,
    Path(ns): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Vec<Match>>> {
    if query.wait_ms.is_some() {
        return Err(ApiError::invalid(
            "wait_ms: searches do not wait (a take does)",
        ));
    }
    let request = Request::Search {
        namespace: ns.clone(),
        query: query.q,
    };
    match ask(&state.space, request).await? {
        Answer::Matches(entries) => Ok(Json(
            entries
                .into_iter()
                .map(|e| Match {
                    path: format!("{ns}/{}", e.summary.name),
                    name: e.summary.name,
                    version: e.version,
                    type_tag: e.summary.type_tag,
                    size: e.summary.size,
                    meta: e.summary.meta,
                    expires_ms: e.expires_ms,
                })
                .collect(),
        )),
        other => Err(unexpected(&other)),
    }
}

/// A take's patience.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TakeQuery {
    wait_ms: Option<u64>,
}

/// `POST /api/v1/take/{ns}/{name}`: the value, and the object is gone.
pub async fn take(
    state: State,
    Path(key): Path<Key>,
    Query(query): Query<TakeQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let taken = server::take_path(&state.space, &key.path(), query.wait_ms).await?;
    send_value(&state.space, Source::Taken(taken), &headers)
}

/// `POST /api/v1/take/{ns}?q=QUERY`: any one match, taken.
pub async fn take_match(
    state: State,
    Path(ns): Path<String>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let taken = server::take_match(&state.space, &ns, &query.q, query.wait_ms).await?;
    send_value(&state.space, Source::Taken(taken), &headers)
}

/// Headers that say which version a body is.
fn describe(headers: &mut HeaderMap, stat: &Stat) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("etag", format!("\"{}\"", stat.version));
    set("x-p3-version", stat.version.to_string());
    set("x-p3-hash", stat.hash.clone());
    set("x-p3-path", stat.path.clone());
    let content_type = if stat.type_tag.contains('/') {
        stat.type_tag.clone()
    } else {
        "application/octet-stream".to_owned()
    };
    set("content-type", content_type);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// `Range: bytes=A-B` (one range) within a value of `size` bytes: the
/// first byte and the byte after the last.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range",
            format!("range {value:?} is outside the value's {size} bytes"),
        )
    };
    let text = value
        .to_str()
        .ok()
        .and_then(|t| t.strip_prefix("bytes="))
        .filter(|t| !t.contains(','))
        .ok_or_else(|| ApiError::invalid("Range: give one range, bytes=FIRST-LAST"))?;
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| ApiError::invalid("Range: give one range, bytes=FIRST-LAST"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| ApiError::invalid(format!("Range: {s:?} is not a number")))
    };
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last N bytes.
        (true, false) => (size.saturating_sub(number(last)?), size),
        (false, true) => (number(first)?, size),
        (false, false) => (number(first)?, number(last)?.saturating_add(1).min(size)),
        (true, true) => return Err(ApiError::invalid("Range: give FIRST or LAST")),
    };
    if start >= end || start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

/// What a body streams: a version found, or one taken (whose value is
/// pinned until it is sent).
enum Source {
    Found(Found),
    Taken(Taken),
}

impl Source {
    fn found(&self) -> &Found {
        match self {
            Source::Found(found) => found,
            Source::Taken(taken) => &taken.found,
        }
    }
}

/// Streams a version's value (the part a `Range` asks for).
fn send_value(space: &ObjectSpace, source: Source, headers: &HeaderMap) -> Result<Response> {
    let stat = source.found().record.stat();
    let part = range(headers, stat.size)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let space = space.clone();
    let (errors_tx, mut errors_rx) = mpsc::channel::<ApiError>(1);
    tokio::spawn(async move {
        if let Err(e) = space.stream_value(source.found(), &tx).await {
            tracing::debug!(error = %e, "HTTP read broke off");
            let _ = errors_tx.send(e.into()).await;
        }
    });
    let (start, end) = part.unwrap_or((0, stat.size));
    // Offsets of each chunk in the value, to cut the range out.
    let mut offset = 0u64;
    let chunks = tokio_stream_of(rx).filter_map(move |chunk| {
        let at = offset;
        offset += chunk.len() as u64;
        let (from, to) = (start.max(at), end.min(offset));
        // The chunk's own buffer, cut to the range: no copy.
        let piece =
            (from < to).then(|| Bytes::from(chunk).slice((from - at) as usize..(to - at) as usize));
        async move { piece.map(Ok::<_, std::io::Error>) }
    });
    // A read that fails half-way ends the body with an error: the client
    // sees a connection cut short, never a value that looks whole.
    let failure = futures::stream::once(async move {
        match errors_rx.recv().await {
            Some(e) => Some(Err(std::io::Error::other(e.reason))),
            None => None,
        }
    })
    .filter_map(|x| async move { x });
    let mut response = Response::new(Body::from_stream(chunks.chain(failure)));
    describe(response.headers_mut(), &stat);
    let length = end - start;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if part.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(value) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, stat.size))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// The receiver as a stream.
fn tokio_stream_of(mut rx: mpsc::Receiver<Vec<u8>>) -> impl futures::Stream<Item = Vec<u8>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        let r = |value: &str| range(&headers(&[("range", value)]), 10);
        assert_eq!(r("bytes=2-5").unwrap(), Some((2, 6)));
        assert_eq!(r("bytes=7-").unwrap(), Some((7, 10)));
        assert_eq!(r("bytes=-3").unwrap(), Some((7, 10)));
        // A last byte past the end is cut to the end.
        assert_eq!(r("bytes=8-100").unwrap(), Some((8, 10)));
        assert_eq!(range(&HeaderMap::new(), 10).unwrap(), None);
        for outside in ["bytes=10-12", "bytes=5-4"] {
            assert_eq!(
                r(outside).unwrap_err().status,
                StatusCode::RANGE_NOT_SATISFIABLE
            );
        }
        for malformed in [
            "bytes=1-2,4-5",
            "items=1-2",
            "bytes=a-2",
            "bytes=-",
            "bytes=3",
        ] {
            assert_eq!(
                r(malformed).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{malformed}"
            );
        }
    }

    #[test]
    fn conditions_from_if_match_and_if_none_match() {
        assert_eq!(
            condition(&headers(&[("if-match", "\"3\"")])).unwrap(),
            Some(3)
        );
        assert_eq!(
            condition(&headers(&[("if-match", "W/\"3\"")])).unwrap(),
            Some(3)
        );
        assert_eq!(condition(&headers(&[("if-match", "3")])).unwrap(), Some(3));
        assert_eq!(
            condition(&headers(&[("if-none-match", "*")])).unwrap(),
            Some(0)
        );
        assert_eq!(condition(&HeaderMap::new()).unwrap(), None);
        assert!(condition(&headers(&[("if-match", "abc")])).is_err());
        assert!(condition(&headers(&[("if-none-match", "\"3\"")])).is_err());
    }

    #[test]
    fn metadata_headers_become_text_or_numbers() {
        let meta = metadata(&headers(&[
            ("x-p3-meta-owner", "ana"),
            ("x-p3-meta-size", "12.5"),
            ("x-p3-meta-nan", "NaN"),
            ("content-type", "text/plain"),
        ]))
        .unwrap();
        assert_eq!(meta.len(), 3, "{meta:?}");
        assert_eq!(meta["owner"], MetaValue::Str("ana".into()));
        assert_eq!(meta["size"], MetaValue::Num(12.5));
        // Not a finite number: kept as the text it was.
        assert_eq!(meta["nan"], MetaValue::Str("NaN".into()));
    }
}
