//! The node: its status, its peers, the owners of a key; namespaces.

use axum::{extract::Path, http::StatusCode, Json};
use p3_dht::PeerInfo;
use p3_objectspace::{
    api::protocol::{Request, Response as Answer},
    object_key, Namespace, ObjectName,
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    error::Result,
    objects::{ask, unexpected},
    State,
};

/// The file the membership layer keeps its view in (as `p3ctl node status`
/// shows it).
const MEMBERSHIP_FILE: &str = "membership.json";

/// `GET /api/v1/node`: what `p3ctl node status` shows.
pub async fn status(state: State) -> Result<Json<Value>> {
    let status = match ask(&state.space, Request::Status).await? {
        Answer::Status(status) => status,
        other => return Err(unexpected(&other)),
    };
    let mut json = serde_json::to_value(status).unwrap_or_default();
    let membership = std::fs::read(state.data_dir.join(MEMBERSHIP_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    if let Value::Object(map) = &mut json {
        // What the dashboard's header says this node is.
        let role = match &membership {
            None => "joining",
            Some(m) if m["leader"] == map["peer_id"] => "leader",
            Some(m) if m["lease_ms"].as_u64().unwrap_or(0) > 0 => "member",
            Some(_) => "no lease",
        };
        map.insert("role".into(), role.into());
        if let Some(membership) = membership {
            map.insert("membership".into(), membership);
        }
    }
    Ok(Json(json))
}

/// `GET /api/v1/peers`.
pub async fn peers(state: State) -> Result<Json<Vec<PeerInfo>>> {
    match ask(&state.space, Request::Peers).await? {
        Answer::Peers(peers) => Ok(Json(peers)),
        other => Err(unexpected(&other)),
    }
}

/// The owners of a key, primary first.
#[derive(Serialize)]
pub struct Owners {
    path: String,
    owners: Vec<String>,
}

/// `GET /api/v1/owners/{ns}/{name}`.
pub async fn owners(
    state: State,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Owners>> {
    let (namespace, object) = (Namespace::new(&ns)?, ObjectName::new(&name)?);
    let owners = state.space.owners(&object_key(&namespace, &object)).await?;
    Ok(Json(Owners {
        path: format!("{ns}/{name}"),
        owners: owners.iter().map(ToString::to_string).collect(),
    }))
}

/// `GET /api/v1/namespaces`.
pub async fn namespaces(state: State) -> Result<Json<Vec<String>>> {
    match ask(&state.space, Request::ListNamespaces).await? {
        Answer::Namespaces(names) => Ok(Json(names)),
        other => Err(unexpected(&other)),
    }
}

/// `PUT /api/v1/namespaces/{ns}`.
pub async fn create_namespace(state: State, Path(ns): Path<String>) -> Result<StatusCode> {
    match ask(&state.space, Request::CreateNamespace(ns)).await? {
        Answer::Done => Ok(StatusCode::CREATED),
        other => Err(unexpected(&other)),
    }
}

/// `DELETE /api/v1/namespaces/{ns}`.
pub async fn remove_namespace(state: State, Path(ns): Path<String>) -> Result<StatusCode> {
    match ask(&state.space, Request::RemoveNamespace(ns)).await? {
        Answer::Done => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(&other)),
    }
}
