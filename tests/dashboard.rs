//! The dashboard in a real browser: headless Chromium driven through
//! WebDriver (chromedriver on 127.0.0.1, `fantoccini`) loads a node's
//! dashboard on a 3-node cluster, finds the 3 nodes, opens an object written
//! with `p3ctl`, and watches a running job's progress reach 100 %. A
//! screenshot of each page is saved under the target dir.
//!
//! `scripts/setup` installs `chromium` and `chromium-driver`; without them
//! the test fails and says so (it is not skipped: the dashboard would go
//! untested).

mod common;

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{p3ctl_ok, wait_for, Cluster, KillOnDrop, DEADLINE};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long the page may take to show what the test waits for: it polls the
/// API every 0.5–2 s.
const PAGE: Duration = Duration::from_secs(30);

/// A free port on 127.0.0.1 (chromedriver cannot pick its own).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port on 127.0.0.1")
        .port()
}

/// Starts chromedriver on 127.0.0.1 and waits until it accepts connections.
fn chromedriver() -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run chromedriver ({e}); run scripts/setup (Debian: chromium, chromium-driver)")
        });
    let driver = KillOnDrop(child);
    wait_for("chromedriver to listen", DEADLINE, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    });
    (driver, port)
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("cannot create the screenshot dir");
    dir
}

/// Polls `check` against the page until it gives a value or `PAGE` passes.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < PAGE,
            "timed out after {PAGE:?} waiting for the page to show {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    client
        .find(Locator::Css(css))
        .await
        .ok()?
        .attr(name)
        .await
        .ok()?
}

async fn attrs(client: &Client, css: &str, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        if let Ok(Some(value)) = element.attr(name).await {
            values.push(value);
        }
    }
    values.sort();
    values
}

async fn click(client: &Client, css: &str) {
    let element = until(&format!("{css} to click"), || async {
        client.find(Locator::Css(css)).await.ok()
    })
    .await;
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("cannot save the screenshot");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_dashboard_shows_the_cluster_an_object_and_a_job_in_a_real_browser() {
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    let node = &cluster.nodes[0];
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(node.dir.join("api.json")).unwrap()).unwrap();
    let http = info["http"].as_str().expect("the node serves HTTP");
    let token = info["token"].as_str().expect("token");

    let value = cluster.root.path().join("hello.txt");
    std::fs::write(&value, "hello from p3ctl\n").unwrap();
    p3ctl_ok(
        &cluster.nodes[1].dir,
        &["put", "global/hello.txt", value.to_str().unwrap()],
    );

    let (_driver, port) = chromedriver();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1000"] }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("cannot start a Chromium session through chromedriver");

        client
            .goto(&format!("http://{http}/#token={token}"))
            .await
            .expect("cannot open the dashboard");

        // The cluster: this node and its two peers.
        let me = until("this node's id", || async {
            text(&client, "#node-id").await.filter(|t| !t.is_empty())
        })
        .await;
        assert_eq!(me, node.peer_id, "the header names the node served from");
        let mut others: Vec<String> = cluster.nodes[1..]
            .iter()
            .map(|n| n.peer_id.clone())
            .collect();
        others.sort();
        let peers = until("the two peers in the table", || async {
            let peers = attrs(&client, "#peers tr.peer", "data-peer-id").await;
            (peers == others).then_some(peers)
        })
        .await;
        let mut all = peers.clone();
        all.push(me.clone());
        all.sort();
        // The ring may be drawn before this node's own status arrives (its
        // centre has no id yet): wait for the whole cluster.
        let mut last = Vec::new();
        let start = Instant::now();
        while last != all {
            assert!(
                start.elapsed() < PAGE,
                "the ring draws {last:?}, not the cluster's nodes {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = attrs(&client, "#ring .ring-peer", "data-peer-id").await;
            last.extend(attrs(&client, "#ring .ring-self", "data-peer-id").await);
            last.sort();
        }
        screenshot(&client, "cluster").await;

        // The object written with p3ctl, found in the browser and opened.
        click(&client, "a[data-tab=objects]").await;
        click(&client, "#namespaces a.ns[data-ns=global]").await;
        click(&client, "#objects tr.object[data-path='global/hello.txt']").await;
        let preview = until("the object's preview", || async {
            text(&client, "#object-preview")
                .await
                .filter(|t| t.contains("hello from p3ctl"))
        })
        .await;
        assert!(preview.contains("hello from p3ctl"), "{preview}");
        until("the stat to show the version p3ctl wrote", || async {
            text(&client, "#object-version").await.filter(|v| v == "1")
        })
        .await;
        screenshot(&client, "object").await;

        // A job submitted with p3ctl: its progress, watched until done.
        let submitted = p3ctl_ok(
            &cluster.nodes[2].dir,
            &[
                "job",
                "run",
                "sleep",
                "--arg",
                "total=12s",
                "--arg",
                "slice=100ms",
                "--json",
            ],
        );
        let submitted: Value = serde_json::from_slice(&submitted.stdout).expect("job JSON");
        let id = submitted["id"].as_str().expect("job id").to_owned();
        click(&client, "a[data-tab=jobs]").await;
        click(&client, &format!("#jobs tr.job[data-job-id='{id}']")).await;
        // Sampled by hand rather than with `until`: every sample is kept.
        let mut seen: Vec<f64> = Vec::new();
        let started = Instant::now();
        let last = loop {
            let progress = attr(&client, "#job-progress", "data-progress")
                .await
                .and_then(|p| p.parse::<f64>().ok());
            if let Some(progress) = progress {
                seen.push(progress);
                let shown = text(&client, "#job-progress").await.unwrap_or_default();
                if progress >= 1.0 && shown == "100 %" {
                    break shown;
                }
            }
            assert!(
                started.elapsed() < PAGE,
                "timed out waiting for the job's progress to reach 100 %: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(last, "100 %");
        assert!(
            seen.iter().any(|p| *p < 1.0),
            "the page showed the job while it ran, not only once done: {seen:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "progress never goes back: {seen:?}"
        );
        let state = until("the job's state to be done", || async {
            text(&client, "#job-state").await.filter(|s| s == "done")
        })
        .await;
        assert_eq!(state, "done");
        until("the chart of work per worker to draw a worker", || async {
            let chart = attrs(&client, "#job-chart polyline.series", "data-key").await;
            (!chart.is_empty()).then_some(())
        })
        .await;
        screenshot(&client, "job").await;

        click(&client, "a[data-tab=metrics]").await;
        until("the metrics to show operations", || async {
            text(&client, "#metric-ops .metric-value")
                .await
                .filter(|t| t != "—" && !t.is_empty())
        })
        .await;
        screenshot(&client, "metrics").await;
        client
            .close()
            .await
            .expect("cannot end the browser session");
    });
}
