//! The conventions: which objects a job consists of, and what they hold. Every
//! node of a job reads and writes only these, in the job's namespace
//! `p3.job.ID`, plus one registry entry `p3.jobs/ID`:
//!
//! | object                | written by            | holds                              |
//! |-----------------------|-----------------------|------------------------------------|
//! | `p3.jobs/ID`          | submitter, finisher   | [`JobRecord`]: kind, args, state, result |
//! | `p3.workers/WID`      | that worker (volatile, TTL) | its slots and kinds: who a new job is spread over |
//! | `task/TID`            | its holder (locked)   | [`TaskRecord`]: checkpoint, credit |
//! | `worker/WID`          | that worker (volatile)| [`Heartbeat`]: load, counters      |
//! | `steal/WID/RID`       | a thief (volatile)    | [`StealRequest`] to victim WID     |
//! | `grant/RID`           | the victim (volatile) | [`Grant`]: its part, or none       |
//! | `result/TID`          | the task's finisher   | [`ResultRecord`]: output, credit   |
//! | `data/...`            | the job's own code    | inputs and outputs ([`crate::Io`]) |
//!
//! Coordination objects are volatile (in the owners' memory: a message to
//! each, no disk, no index); what must survive every crash — tasks'
//! checkpoints, results, the registry — is durable. Paths are built only by
//! [`JobPaths`].
//!
//! A task is running exactly while someone holds the write lock on its
//! `task/TID`; its writes carry the lock's fencing token, so a holder that lost
//! the lock cannot overwrite the task's next holder.

use std::fmt;

use p3_objectspace::object::{MetaValue, Metadata};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::job::{Args, JobError, Result};

/// The namespace listing every job.
pub const JOBS_NAMESPACE: &str = "p3.jobs";
/// The namespace where every worker says that it is there and how many
/// slots it has (volatile objects with a TTL, renewed while it runs), so that
/// a submitter can spread a new job over the workers at once.
pub const WORKERS_NAMESPACE: &str = "p3.workers";
/// Metadata key of a worker's slot count in [`WORKERS_NAMESPACE`].
pub const SLOTS_META: &str = "slots";
/// Metadata key of the job kinds a worker runs (comma-separated) in
/// [`WORKERS_NAMESPACE`].
pub const KINDS_META: &str = "kinds";
/// Type tag of a [`JobRecord`].
pub const JOB_TYPE: &str = "p3.job";

/// A job's id: 12 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(String);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(hex::encode(rand::random::<[u8; 6]>()))
    }

    /// Checks a user-given id.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() == 12
            && text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(JobError::NoSuchJob(format!(
                "{text} (a job id is 12 hex digits, as `p3ctl job ls` shows)"
            )))
        }
    }

    /// The job's own namespace.
    pub fn namespace(&self) -> String {
        format!("p3.job.{}", self.0)
    }

    /// The path of its registry entry.
    pub fn record_path(&self) -> String {
        format!("{JOBS_NAMESPACE}/{}", self.0)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The paths of one job's objects, built in this one place.
#[derive(Debug, Clone)]
pub struct JobPaths {
    ns: String,
}

/// Name prefix of tasks.
pub const TASKS: &str = "task/";
/// Name prefix of results.
pub const RESULTS: &str = "result/";
/// Name prefix of heartbeats.
pub const WORKERS: &str = "worker/";

impl JobPaths {
    /// The paths of job `id`.
    pub fn new(id: &JobId) -> Self {
        Self { ns: id.namespace() }
    }

    /// The job's namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// `task/TID`.
    pub fn task(&self, tid: &str) -> String {
        format!("{}/{TASKS}{tid}", self.ns)
    }

    /// `worker/WID`.
    pub fn worker(&self, wid: &str) -> String {
        format!("{}/{WORKERS}{wid}", self.ns)
    }

    /// The name prefix of steal requests to `victim` (inside the namespace).
    pub fn steals_to(victim: &str) -> String {
        format!("steal/{victim}/")
    }

    /// `steal/VICTIM/RID`.
    pub fn steal(&self, victim: &str, rid: &str) -> String {
        format!("{}/{}{rid}", self.ns, Self::steals_to(victim))
    }

    /// `grant/RID`.
    pub fn grant(&self, rid: &str) -> String {
        format!("{}/grant/{rid}", self.ns)
    }

    /// `result/TID`.
    pub fn result(&self, tid: &str) -> String {
        format!("{}/{RESULTS}{tid}", self.ns)
    }

    /// `data/NAME`.
    pub fn data(&self, name: &str) -> String {
        format!("{}/data/{name}", self.ns)
    }
}

/// The last part of a path: a task, worker or request id.
pub fn last_part(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A fresh random task or request id.
pub fn random_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Workers are on it.
    Running,
    /// All credit came back; the result is in.
    Done,
    /// `p3ctl job cancel`.
    Cancelled,
    /// A task failed with this reason.
    Failed(String),
}

impl JobState {
    /// Whether the job will never run again.
    pub fn is_final(&self) -> bool {
        !matches!(self, JobState::Running)
    }

    /// One word for tables and metadata.
    pub fn word(&self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            JobState::Failed(_) => "failed",
        }
    }
}

/// The registry entry of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its arguments.
    pub args: Args,
    /// Where it is in its life.
    pub state: JobState,
    /// When it was submitted (ms since the epoch).
    pub submitted_ms: u64,
    /// When its root task was published, after `main`.
    pub started_ms: u64,
    /// When it reached a final state.
    pub finished_ms: Option<u64>,
    /// The reduced result, as JSON text, once done.
    pub result: Option<String>,
    /// The root task's id, when it was published whole: idle workers claim
    /// `task/ROOT` straight away (its lock decides which one runs it). `None`
    /// for a job spread over its workers (see `parts`), or one submitted by
    /// a version before roots (the scan of `task/` finds its root).
    #[serde(default)]
    pub root: Option<String>,
    /// Whether the root task's first state can be divided. If not, the
    /// workers that lose the race for it do not ask its winner for work at
    /// once: there is none to give until it can be divided, and the winner's
    /// heartbeat says when. Records of older versions say nothing: yes.
    #[serde(default = "divides_unless_told")]
    pub root_divides: bool,
    /// The parts the submitter divided the root into, each for a worker it
    /// knew of (instead of a root): each worker claims its own at once. A
    /// part its worker does not claim is picked up by any idle worker.
    /// Parts whose states ride here are not written as `task/TID` by the
    /// submitter: this record is their first durable copy, and a worker
    /// writes the task when it checkpoints or hands it over.
    #[serde(default)]
    pub parts: Vec<Assigned>,
}

/// A part of a job's root, and the worker it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// Its `task/TID`.
    pub tid: String,
    /// The worker that is to claim it.
    pub worker: String,
    /// Its share of the credit.
    pub credit: Credit,
    /// Its state as written in `task/TID`, when the parts are small enough
    /// to ride in the record: its worker starts on it without reading the
    /// task first.
    #[serde(default, with = "serde_bytes")]
    pub state: Option<Vec<u8>>,
}

fn divides_unless_told() -> bool {
    true
}

impl JobRecord {
    /// Metadata for listings.
    pub fn meta(&self) -> Metadata {
        Metadata::from([
            ("kind".into(), MetaValue::Str(self.kind.clone())),
            ("state".into(), MetaValue::Str(self.state.word().into())),
        ])
    }
}

pub use crate::credit::{Credit, Ledger};

/// A task divided off but perhaps not yet written as `task/TID`: kept in the
/// divided task's checkpoint until then, so a holder that dies between the two
/// writes loses neither the part nor its credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The new task's id (the steal request's id).
    pub tid: String,
    /// Its state.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// Its credit.
    pub credit: Credit,
    /// The thief it is for.
    pub holder: String,
}

/// A task: `task/TID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub tid: String,
    /// Its last checkpoint.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// Its share of the credit.
    pub credit: Credit,
    /// The worker running it or meant to (a thief it was divided off for).
    pub holder: Option<String>,
    /// How many times a worker has claimed it; above 0 at a claim means the
    /// task resumes from a checkpoint after its last holder stopped.
    pub claims: u32,
    /// Parts divided off whose `task/TID` may not exist yet.
    pub parts: Vec<Part>,
}

impl TaskRecord {
    /// Its holder as metadata, so a scan for abandoned tasks needs only a
    /// listing.
    pub fn meta(&self) -> Metadata {
        self.holder
            .iter()
            .map(|h| ("holder".to_owned(), MetaValue::Str(h.clone())))
            .collect()
    }
}

/// What a victim answers a steal request with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Grant {
    /// `task/TID` is the thief's.
    Task(String),
    /// This part is the thief's: it runs it at once, creating `task/TID`
    /// itself. The victim's checkpoint lists the part until `task/TID`
    /// exists, so neither a thief nor a victim that dies loses it.
    Part(Part),
    /// Nothing to give.
    Declined,
}

/// `steal/VICTIM/RID`: a thief asks a victim for work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StealRequest {
    /// The thief's worker id.
    pub thief: String,
}

/// `result/TID`: a finished task's output and credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The encoded output.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// The credit handed back.
    pub credit: Credit,
    /// The worker that finished it.
    pub worker: String,
}

/// A worker's counters for one job; they only grow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Slices of `compute` run.
    pub slices: u64,
    /// Time spent in `compute` and `restart`, ms.
    pub busy_ms: u64,
    /// Tasks finished.
    pub finished: u64,
    /// Tasks obtained by stealing.
    pub steals: u64,
    /// Times this worker divided a task for a thief.
    pub divides: u64,
    /// Tasks resumed from a checkpoint after their holder stopped.
    pub restarts: u64,
    /// Time spent answering steal requests at safe points (taking them,
    /// dividing, writing checkpoint, parts and grants), ms.
    #[serde(default)]
    pub serve_ms: u64,
    /// For the last [`STEAL_SAMPLES`] successful steals: ms from writing the
    /// request to the first slice of the stolen task.
    #[serde(default)]
    pub steal_latency_ms: Vec<u32>,
}

/// Steal latencies a worker keeps (the newest).
pub const STEAL_SAMPLES: usize = 64;

impl WorkerStats {
    /// Notes one steal's latency, keeping the newest [`STEAL_SAMPLES`].
    pub fn note_steal(&mut self, latency: std::time::Duration) {
        if self.steal_latency_ms.len() >= STEAL_SAMPLES {
            self.steal_latency_ms.remove(0);
        }
        self.steal_latency_ms
            .push(u32::try_from(latency.as_millis()).unwrap_or(u32::MAX));
    }
}

/// `worker/WID`: a worker's heartbeat for one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node's peer id.
    pub worker: String,
    /// Tasks of the job it is running now.
    pub running: u32,
    /// Sum of [`crate::Job::load`] over them.
    pub load: f64,
    /// Its counters.
    pub stats: WorkerStats,
}

impl Heartbeat {
    /// What thieves act on: its running tasks and their load, if it has
    /// load to give (a worker without is never asked).
    pub fn offer(&self) -> Option<(u32, f64)> {
        (self.running > 0 && self.load > 0.0).then_some((self.running, self.load))
    }

    /// Metadata a thief reads from a listing without fetching values.
    pub fn meta(&self) -> Metadata {
        Metadata::from([
            ("running".into(), MetaValue::Num(f64::from(self.running))),
            ("load".into(), MetaValue::Num(self.load)),
        ])
    }
}

/// Encodes a record as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing plain records into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut bytes);
    bytes
}

/// Decodes a record read from the space; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| JobError::Codec(format!("{what}: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn only_a_worker_with_load_to_give_offers_any() {
        let beat = |running, load| Heartbeat {
            running,
            load,
            ..Heartbeat::default()
        };
        assert_eq!(beat(2, 7.5).offer(), Some((2, 7.5)));
        // A task that can no longer be divided advertises no load: its end
        // changes nothing a thief acts on.
        assert_eq!(beat(1, 0.0).offer(), None);
        assert_eq!(beat(0, 0.0).offer(), beat(1, 0.0).offer());
    }

    #[test]
    fn records_round_trip_and_ids_are_checked() {
        let task = TaskRecord {
            tid: random_id(),
            state: vec![1, 2, 3],
            credit: Credit { exponent: 12 },
            holder: Some("w".into()),
            claims: 2,
            parts: vec![],
        };
        assert_eq!(decode::<TaskRecord>(&encode(&task), "task").unwrap(), task);
        assert!(decode::<TaskRecord>(b"\xff\x00", "task").is_err());
        let id = JobId::random();
        assert_eq!(JobId::parse(id.as_str()).unwrap(), id);
        assert!(JobId::parse("../etc").is_err());
        assert!(p3_objectspace::Namespace::new(&id.namespace()).is_ok());
    }

    /// A running `sum` job's record whose root was published whole and does
    /// not divide.
    pub(crate) fn running_job() -> JobRecord {
        JobRecord {
            id: JobId::random(),
            kind: "sum".into(),
            args: Args::from_pairs(["to=1"]).unwrap(),
            state: JobState::Running,
            submitted_ms: 1,
            started_ms: 2,
            finished_ms: None,
            result: None,
            root: Some(random_id()),
            root_divides: false,
            parts: Vec::new(),
        }
    }

    #[test]
    fn a_job_record_without_root_divides_reads_as_divisible() {
        let record = running_job();
        let read: JobRecord = decode(&encode(&record), "job").unwrap();
        assert!(!read.root_divides);
        // A record written by a version without the field.
        let mut older: ciborium::Value = ciborium::Value::serialized(&record).unwrap();
        if let ciborium::Value::Map(fields) = &mut older {
            fields.retain(|(k, _)| k.as_text() != Some("root_divides"));
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&older, &mut bytes).unwrap();
        assert_ne!(bytes, encode(&record), "the field is still there");
        assert!(decode::<JobRecord>(&bytes, "job").unwrap().root_divides);
    }
}
