//! A client of one node's HTTP API for these tests: requests with the
//! node's token, answers read whole, SSE lines, metric values.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use ureq::{
    http::{HeaderMap, Response},
    typestate::{WithBody, WithoutBody},
    Agent, Body, RequestBuilder,
};

use crate::common::{objects::MIB, Cluster, NodeProc};

/// One node's HTTP address and token (from its `api.json`), and a client
/// that hands every status back as an answer (not as an error).
pub struct Http {
    pub addr: String,
    pub token: String,
    pub agent: Agent,
}

impl Http {
    pub fn of(node: &NodeProc) -> Http {
        let path = node.dir.join("api.json");
        let info: Value = serde_json::from_slice(
            &fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
        )
        .expect("api.json is not JSON");
        let addr = info["http"]
            .as_str()
            .unwrap_or_else(|| panic!("api.json has no HTTP address: {info}"))
            .to_owned();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "the node serves HTTP on {addr}, not on 127.0.0.1"
        );
        let token = info["token"].as_str().expect("api.json: token").to_owned();
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            // A hung server fails the test rather than hanging it.
            .timeout_global(Some(Duration::from_secs(150)))
            .build()
            .new_agent();
        Http { addr, token, agent }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `request` with the node's token.
    fn authed<B>(&self, request: RequestBuilder<B>) -> RequestBuilder<B> {
        request.header("Authorization", self.bearer())
    }

    pub fn get(&self, path: &str) -> RequestBuilder<WithoutBody> {
        self.authed(self.agent.get(self.url(path)))
    }

    pub fn head(&self, path: &str) -> RequestBuilder<WithoutBody> {
        self.authed(self.agent.head(self.url(path)))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder<WithoutBody> {
        self.authed(self.agent.delete(self.url(path)))
    }

    pub fn put(&self, path: &str) -> RequestBuilder<WithBody> {
        self.authed(self.agent.put(self.url(path)))
    }

    pub fn post(&self, path: &str) -> RequestBuilder<WithBody> {
        self.authed(self.agent.post(self.url(path)))
    }

    /// `PUT /api/v1/objects/PATH` of `value`, expecting `201`; the answer's JSON.
    pub fn put_object(&self, path: &str, value: &[u8]) -> Value {
        let reply = self.put(&format!("/api/v1/objects/{path}")).bytes(value);
        reply.expect(201, &format!("PUT {path}"));
        reply.json()
    }

    /// `POST /api/v1/locks` with `body`.
    pub fn lock(&self, body: Value) -> Reply {
        self.post("/api/v1/locks").json_body(&body)
    }
}

/// An answer, its body read whole (at most 16 MiB: no test reads more
/// this way; the large value is read as a stream).
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

pub fn reply(result: Result<Response<Body>, ureq::Error>, what: &str) -> Reply {
    let mut response = result.unwrap_or_else(|e| panic!("{what}: no HTTP answer: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .body_mut()
        .with_config()
        .limit(16 * MIB)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{what}: cannot read the body of the {status} answer: {e}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// Sending a request without a body.
pub trait Call {
    fn reply(self) -> Reply;
}

/// "METHOD PATH" of a request, for messages.
pub fn describe<B>(request: &RequestBuilder<B>) -> String {
    format!(
        "{} {}",
        request.method_ref().map_or("?", |m| m.as_str()),
        request
            .uri_ref()
            .and_then(|u| u.path_and_query())
            .map_or("?", |p| p.as_str())
    )
}

impl Call for RequestBuilder<WithoutBody> {
    fn reply(self) -> Reply {
        let what = describe(&self);
        reply(self.call(), &what)
    }
}

/// Sending a request with a body.
pub trait SendWith {
    fn bytes(self, body: &[u8]) -> Reply;
    fn json_body(self, body: &Value) -> Reply;
    fn empty(self) -> Reply;
}

impl SendWith for RequestBuilder<WithBody> {
    fn bytes(self, body: &[u8]) -> Reply {
        let what = format!("{} ({} bytes)", describe(&self), body.len());
        reply(self.send(body), &what)
    }

    fn json_body(self, body: &Value) -> Reply {
        let what = format!("{} {body}", describe(&self));
        reply(
            self.header("Content-Type", "application/json")
                .send(body.to_string().as_bytes()),
            &what,
        )
    }

    fn empty(self) -> Reply {
        let what = describe(&self);
        reply(self.send_empty(), &what)
    }
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answer is not JSON ({e}): {:.500}",
                self.status,
                self.text()
            )
        })
    }

    /// Fails (showing the body) unless the status is `status`.
    pub fn expect(&self, status: u16, what: &str) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{what}: status {} (want {status}); body: {:.500}",
            self.status,
            self.text()
        );
        self
    }

    /// Fails unless this is the error `docs/http.md` promises: `status`, and
    /// a JSON body `{error, kind}` whose error is one line. Returns the error.
    pub fn expect_error(&self, status: u16, kind: &str, what: &str) -> String {
        self.expect(status, what);
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: a {status} error should be JSON, got Content-Type {content_type:?}: {:.500}",
            self.text()
        );
        let body = self.json();
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: the error body has no `error` text: {body}"));
        assert!(!error.trim().is_empty(), "{what}: an empty error: {body}");
        assert!(
            !error.contains('\n'),
            "{what}: the error should be one line: {error:?}"
        );
        assert_eq!(body["kind"], kind, "{what}: {body}");
        error.to_owned()
    }
}

/// Names the objects of a JSON list of `{path, ...}` hold.
pub fn paths(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| {
            o["path"]
                .as_str()
                .unwrap_or_else(|| panic!("an entry without path: {o}"))
                .to_owned()
        })
        .collect()
}

/// Waits until a search of `namespace` for `query` through `http` lists
/// `path`: a write is searchable only once its index row reaches the shard's
/// owners, about 10 ms after it is acknowledged (rows are gathered), so a
/// search or a take by query right after a put may rightly miss it.
pub fn await_searchable(http: &Http, namespace: &str, query: &str, path: &str) {
    crate::common::wait_for(
        &format!("{path} to be found by `{query}`"),
        Duration::from_secs(10),
        || {
            let found = http
                .get(&format!("/api/v1/search/{namespace}"))
                .query("q", query)
                .reply();
            (found.status == 200 && paths(&found.json()).contains(path)).then_some(())
        },
    );
}

pub fn formed(n: usize) -> Cluster {
    let cluster = Cluster::start(n);
    cluster.wait_formed();
    cluster
}

/// Fails if `call` finishes within `time`: a blocking call on something
/// that does not exist yet must still be waiting. (This watches for an
/// early return; nothing it could wait for would say "still blocked".)
pub fn still_waiting<T>(call: &thread::JoinHandle<T>, time: Duration, what: &str) {
    let start = Instant::now();
    while start.elapsed() < time {
        assert!(
            !call.is_finished(),
            "{what} returned after {:?}, before anything was written",
            start.elapsed()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads an SSE stream line by line on a thread; the lines come out of the
/// channel. The thread ends when the node closes the stream (the test's end
/// kills the nodes).
pub fn sse_lines(http: &Http, path: &str) -> mpsc::Receiver<String> {
    let response = http
        .get(path)
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "GET {path}: Content-Type {content_type}"
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let lines = BufReader::new(response.into_body().into_reader()).lines();
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of the stream, within the deadline.
pub fn next_line(lines: &mpsc::Receiver<String>, until: Instant, what: &str) -> String {
    let left = until.saturating_duration_since(Instant::now());
    lines
        .recv_timeout(left)
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// The value of the series `name` whose labels include `labels` (summed
/// over the series that match; 0 if none does).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

pub fn scrape(http: &Http) -> String {
    let reply = http.get("/metrics").reply();
    reply.expect(200, "GET /metrics");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        reply.header("content-type")
    );
    reply.text()
}
