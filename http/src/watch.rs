//! Watches as Server-Sent Events: `event: watching` once the watch is
//! established, then one `data:` line of JSON per change.

use std::convert::Infallible;

use axum::{
    extract::{Path, Query},
    response::sse::{Event as Sse_, KeepAlive, Sse},
};
use futures::{stream, Stream, StreamExt};
use p3_objectspace::api::server;
use serde::Deserialize;

use crate::{error::Result, State};

/// Which objects.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    exact: bool,
}

/// `GET /api/v1/watch/{ns}?prefix=P&exact=true`.
pub async fn watch(
    state: State,
    Path(ns): Path<String>,
    Query(query): Query<WatchQuery>,
) -> Result<Sse<impl Stream<Item = Result<Sse_, Infallible>>>> {
    let events = server::start_watch(&state.space, &ns, &query.prefix, query.exact).await?;
    let established = stream::once(async { Ok(Sse_::default().event("watching").data("")) });
    // Ends after an error event (the watch cannot go on) or when the client
    // hangs up (axum drops the stream, and with it the watch).
    let changes = stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        match events.next().await {
            Ok(event) => {
                // `type`, as in a stat and a search result (the CBOR field
                // is `type_tag`).
                let mut json = serde_json::to_value(&event).unwrap_or_default();
                if let serde_json::Value::Object(map) = &mut json {
                    if let Some(tag) = map.remove("type_tag") {
                        map.insert("type".into(), tag);
                    }
                }
                let sse = Sse_::default()
                    .json_data(&json)
                    .unwrap_or_else(|e| Sse_::default().event("error").data(e.to_string()));
                Some((Ok(sse), Some(events)))
            }
            Err(e) => Some((Ok(Sse_::default().event("error").data(e.to_string())), None)),
        }
    });
    Ok(Sse::new(established.chain(changes)).keep_alive(KeepAlive::default()))
}
