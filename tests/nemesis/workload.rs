//! The clients: on every node, threads that drive `p3ctl` processes in a loop
//! (a CAS counter, unique writes, a write lock around a logged critical
//! section, takes) and record what each operation returned and when.

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::checker::{Cas, History, Hold, Op, Outcome};

/// How many objects the take clients compete for.
pub const TASKS: u32 = 100;
/// A client gives up on a `p3ctl` that has not answered in this long (its
/// operation's outcome is then unknown).
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// The path of task object `k`.
pub fn task(k: u32) -> String {
    format!("global/nemesis-task-{k}")
}

/// How to run `p3ctl ARGS` against a node: a function so each client builds
/// its commands for its own node and namespace.
pub type P3ctl = Arc<dyn Fn(&[&str]) -> Command + Send + Sync>;

/// What a `p3ctl` run returned.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The outcome of a write that printed `stderr`: refused when p3ctl says
    /// why, unknown when the answer never came or says so.
    fn outcome(&self) -> Outcome {
        let err = self.stderr.trim();
        if self.ok {
            Outcome::Ok
        } else if err.is_empty() || err.contains("may or may not") {
            Outcome::Unknown(err.to_owned())
        } else {
            Outcome::Refused(err.to_owned())
        }
    }
}

/// Runs `cmd` with `input` on stdin, killing it after [`CLIENT_DEADLINE`].
fn run(mut cmd: Command, input: &[u8]) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for p3ctl") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ran {
        ok: status.is_some_and(|s| s.success()),
        stdout: out.join().unwrap_or_default(),
        stderr: match status {
            Some(_) => err.join().unwrap_or_default(),
            None => "no answer within the client's deadline".into(),
        },
    }
}

/// A running set of client threads.
pub struct Clients {
    t0: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<History>>,
}

impl Clients {
    /// No clients yet; times are measured from now.
    pub fn new() -> Clients {
        Clients {
            t0: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn spawn(
        &mut self,
        node: usize,
        p3ctl: P3ctl,
        body: impl FnOnce(&Client) -> History + Send + 'static,
    ) {
        let client = Client {
            node,
            p3ctl,
            t0: self.t0,
            stop: self.stop.clone(),
        };
        self.threads.push(thread::spawn(move || body(&client)));
    }

    /// Starts the counter, unique-write and lock clients of node `node`.
    pub fn start(&mut self, node: usize, p3ctl: P3ctl, (counter, lock): (&str, &str)) {
        let counter = counter.to_owned();
        self.spawn(node, p3ctl.clone(), move |c| counter_client(c, &counter));
        self.spawn(node, p3ctl.clone(), writes_client);
        let lock = lock.to_owned();
        self.spawn(node, p3ctl, move |c| lock_client(c, &lock));
    }

    /// Starts node `node`'s take client: it tries every task once, beginning
    /// at a different one on each node so the nodes compete.
    pub fn start_takes(&mut self, node: usize, p3ctl: P3ctl) {
        self.spawn(node, p3ctl, |c| {
            let mut history = History::default();
            for i in 0..TASKS {
                if !c.running() {
                    break;
                }
                let k = (i + c.node as u32 * TASKS / 5) % TASKS;
                let start = c.now();
                let ran = c.run(&["take", &task(k)], b"");
                history.takes.push(c.op(start, k, ran.outcome()));
            }
            history
        });
    }

    /// Stops every client after its current operation; everything they saw.
    pub fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = History::default();
        for thread in self.threads {
            history.merge(thread.join().expect("a client thread panicked"));
        }
        history
    }
}

/// One client thread's context: its node, how it runs `p3ctl`, the run's
/// clock and the stop flag.
struct Client {
    node: usize,
    p3ctl: P3ctl,
    t0: Instant,
    stop: Arc<AtomicBool>,
}

impl Client {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn run(&self, args: &[&str], input: &[u8]) -> Ran {
        run((self.p3ctl)(args), input)
    }

    /// The record of an operation started at `start` and answered now.
    fn op<T>(&self, start: Duration, what: T, outcome: Outcome) -> Op<T> {
        Op {
            node: self.node,
            start,
            end: self.now(),
            what,
            outcome,
        }
    }
}

/// A client that failed waits this long before its next try, so a refusing
/// minority does not spin (pacing only: nothing waits on it).
const BACKOFF: Duration = Duration::from_millis(100);

fn counter_client(c: &Client, counter: &str) -> History {
    let mut history = History::default();
    let mut seq = 0;
    while c.running() {
        let read = c.run(&["get", counter], b"");
        let stat = c.run(&["stat", counter, "--json"], b"");
        let version = serde_json::from_str::<serde_json::Value>(&stat.stdout)
            .ok()
            .and_then(|v| v["version"].as_u64());
        let (true, Some(version)) = (read.ok, version) else {
            thread::sleep(BACKOFF);
            continue;
        };
        history.reads.push(read.stdout);
        seq += 1;
        let value = format!("n{}-{seq}", c.node);
        let start = c.now();
        let expected = version.to_string();
        let args = ["put", counter, "-", "--if-version", &expected, "--json"];
        let put = c.run(&args, value.as_bytes());
        let made = serde_json::from_str::<serde_json::Value>(&put.stdout)
            .ok()
            .and_then(|v| v["version"].as_u64());
        let outcome = put.outcome();
        if !outcome.ok() {
            thread::sleep(BACKOFF);
        }
        let cas = Cas {
            read: version,
            value,
            made,
        };
        history.cas.push(c.op(start, cas, outcome));
    }
    history
}

fn writes_client(c: &Client) -> History {
    let mut history = History::default();
    let mut seq = 0;
    while c.running() {
        seq += 1;
        let key = format!("global/nemesis-unique-{}-{seq}", c.node);
        let value = format!("written by node {}, number {seq}", c.node);
        let start = c.now();
        let outcome = c.run(&["put", &key, "-"], value.as_bytes()).outcome();
        if !outcome.ok() {
            thread::sleep(BACKOFF);
        }
        history.writes.push(c.op(start, (key, value), outcome));
    }
    history
}

/// The critical section: logs the token and the wall clock (one clock for
/// every node: they share this machine) at its start and end.
const SECTION: &str = r#"echo "$P3_FENCING_TOKEN $(date +%s%N)"; sleep 0.1; date +%s%N"#;

fn lock_client(c: &Client, lock: &str) -> History {
    let mut history = History::default();
    while c.running() {
        let start = c.now();
        let args = [
            "lock",
            lock,
            "--write",
            "--lease",
            "2s",
            "--timeout",
            "5s",
            "--",
            "sh",
            "-c",
            SECTION,
        ];
        let ran = c.run(&args, b"");
        let mut lines = ran.stdout.lines();
        let first: Vec<u128> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let end = lines.next().and_then(|l| l.trim().parse().ok());
        match (first.as_slice(), end) {
            // A section that began and was cut off counts until now: longer
            // is stricter.
            ([token, from_ns], end) => {
                let to_ns = end.unwrap_or_else(wall_ns);
                let hold = Hold {
                    token: *token as u64,
                    from_ns: *from_ns,
                    to_ns,
                };
                history.holds.push(c.op(start, hold, Outcome::Ok));
            }
            _ => thread::sleep(BACKOFF),
        }
    }
    history
}

fn wall_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
