//! The client side of the local API, used by `p3ctl` and by Rust programs.

use std::{io, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use tokio::{net::TcpStream, time::timeout};

use super::{
    protocol::{Hello, Request, Response},
    read_frame, write_frame, ApiInfo,
};
use crate::config::DataDir;

/// How long a call may take before the client gives up on a node that accepts
/// connections but does not answer (hung, or stopped with SIGSTOP). Longer than
/// any network deadline of the node, so a slow but working answer still arrives.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A connection to the node running on a data directory.
pub struct Client {
    stream: TcpStream,
    timeout: Duration,
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
        Ok(Self {
            stream,
            timeout: CALL_TIMEOUT,
        })
    }

    /// Replaces [`CALL_TIMEOUT`] for the calls made through this client.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request and waits for its response; a [`Response::Error`] becomes
    /// an error.
    pub async fn call(&mut self, request: Request) -> Result<Response> {
        let exchange = async {
            write_frame(&mut self.stream, &request).await?;
            read_frame(&mut self.stream).await
        };
        let answer = timeout(self.timeout, exchange).await.map_err(|_| {
            anyhow!(
                "the node did not answer within {:?}; it may be hung (check its log)",
                self.timeout
            )
        })?;
        match answer? {
            Some(Response::Error(reason)) => bail!("{reason}"),
            Some(response) => Ok(response),
            None => bail!("the node closed the connection (is it shutting down?)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_never_answers_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::resolve(Some(dir.path().to_owned())).unwrap();
        // Accepts connections and reads, but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let info = ApiInfo {
            addr: listener.local_addr().unwrap().to_string(),
            token: "t".into(),
            pid: 0,
        };
        std::fs::write(data.api_file(), serde_json::to_string(&info).unwrap()).unwrap();
        let silent = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink)
                .await
                .ok();
        });

        let client = Client::connect(&data).await.unwrap();
        let err = client
            .with_timeout(Duration::from_millis(200))
            .call(Request::Status)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not answer"), "{err}");
        silent.abort();
    }
}
