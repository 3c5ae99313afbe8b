//! The client side of the local API, used by `p3ctl` and by Rust programs.

use std::io;

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::TcpStream;

use super::{
    protocol::{Hello, Request, Response},
    read_frame, write_frame, ApiInfo,
};
use crate::config::DataDir;

/// A connection to the node running on a data directory.
pub struct Client {
    stream: TcpStream,
}

impl Client {
    /// Connects to the node of `dir`, failing with advice if none runs there.
    pub async fn connect(dir: &DataDir) -> Result<Self> {
        let not_running = || {
            anyhow!(
                "no node is running on data dir {0}; start one with `p3ctl node start --data-dir {0}`",
                dir.root().display()
            )
        };
        let text = match std::fs::read_to_string(dir.api_file()) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_running()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", dir.api_file().display()))
            }
        };
        let info: ApiInfo = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt; restart the node to rewrite it",
                dir.api_file().display()
            )
        })?;
        let mut stream = match TcpStream::connect(&info.addr).await {
            Ok(stream) => stream,
            // A node killed without a clean shutdown leaves its api.json behind.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(not_running()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot reach the node at {}", info.addr))
            }
        };
        write_frame(&mut stream, &Hello { token: info.token }).await?;
        Ok(Self { stream })
    }

    /// Sends one request and waits for its response; a [`Response::Error`] becomes
    /// an error.
    pub async fn call(&mut self, request: Request) -> Result<Response> {
        write_frame(&mut self.stream, &request).await?;
        match read_frame(&mut self.stream).await? {
            Some(Response::Error(reason)) => bail!("{reason}"),
            Some(response) => Ok(response),
            None => bail!("the node closed the connection (is it shutting down?)"),
        }
    }
}
