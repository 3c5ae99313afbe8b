//! The node's side of the local API.

use std::sync::Arc;

use p3_dht::Node;
use tokio::net::{TcpListener, TcpStream};

use super::{
    protocol::{Hello, Request, Response},
    read_frame, write_frame, FrameError,
};

/// Accepts API connections until the task is dropped.
pub async fn serve(listener: TcpListener, token: String, node: Node) {
    let token = Arc::new(token);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (token, node) = (token.clone(), node.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &token, &node).await {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "API accept failed"),
        }
    }
}

async fn connection(mut stream: TcpStream, token: &str, node: &Node) -> Result<(), FrameError> {
    let Some(hello) = read_frame::<_, Hello>(&mut stream).await? else {
        return Ok(());
    };
    if !same(hello.token.as_bytes(), token.as_bytes()) {
        let refusal =
            Response::Error("wrong API token; use the api.json of this node's data dir".into());
        return write_frame(&mut stream, &refusal).await;
    }
    while let Some(request) = read_frame::<_, Request>(&mut stream).await? {
        let response = handle(request, node).await;
        write_frame(&mut stream, &response).await?;
    }
    Ok(())
}

async fn handle(request: Request, node: &Node) -> Response {
    let result = match request {
        Request::Status => node.status().await.map(Response::Status),
        Request::Peers => node.peers().await.map(Response::Peers),
        Request::Closest { key } => node
            .closest_peers(key)
            .await
            .map(|peers| Response::Closest(peers.iter().map(ToString::to_string).collect())),
    };
    result.unwrap_or_else(|e| Response::Error(e.to_string()))
}

/// Token comparison in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
