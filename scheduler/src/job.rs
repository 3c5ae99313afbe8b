//! The P³ programming model: what a job kind implements.
//!
//! A job is split into tasks. Each task is a piece of state the runtime moves
//! between nodes as bytes; a job kind says how to start (`main`), how to make
//! progress on a task (`compute`, a bounded slice at a time), how to give away
//! part of a task's remaining work (`divide`), how to resume a task on another
//! node (`restart`), and how to combine what finished tasks produced (`reduce`).
//! Between two slices of `compute` the runtime may checkpoint the task, hand half
//! of it to a thief, or stop it: those are the safe points.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use p3_objectspace::SpaceError;
use serde::{de::DeserializeOwned, Serialize};

/// What went wrong in a job or its runtime.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A `--arg` the job kind cannot use.
    #[error("invalid job argument: {0}")]
    Arg(String),
    /// The object space refused or failed an operation.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// A task state, output or record that does not decode.
    #[error("cannot decode {0}")]
    Codec(String),
    /// The job's own code reported a failure.
    #[error("job failed: {0}")]
    Failed(String),
    /// No job kind of that name is registered in this binary.
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    /// No job with that id.
    #[error("no job {0:?}")]
    NoSuchJob(String),
    /// The job was cancelled while the runtime worked on it.
    #[error("job cancelled")]
    Cancelled,
}

/// Shorthand for results of this crate.
pub type Result<T, E = JobError> = std::result::Result<T, E>;

/// The outcome of one slice of `compute`.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<O> {
    /// The task has work left; call `compute` again.
    More,
    /// The task is finished and produced this output.
    Done(O),
}

/// A job's arguments: the `--arg KEY=VALUE` pairs it was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Args(BTreeMap<String, String>);

impl Args {
    /// Parses `KEY=VALUE` pairs.
    pub fn from_pairs<S: AsRef<str>>(pairs: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for pair in pairs {
            let pair = pair.as_ref();
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| JobError::Arg(format!("{pair:?} is not KEY=VALUE")))?;
            map.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(Self(map))
    }

    /// Adds or replaces one argument.
    pub fn set(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.0.insert(key.to_owned(), value.to_string());
        self
    }

    /// The argument `key` parsed as `T`, or `default` when it is absent.
    pub fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        match self.0.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|e| JobError::Arg(format!("{key}={text}: {e}"))),
        }
    }

    /// The argument `key` as a duration such as `250ms`, `2s`, `1m`.
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.0.get(key) {
            None => Ok(default),
            Some(text) => parse_duration(text)
                .ok_or_else(|| JobError::Arg(format!("{key}={text}: expected e.g. 250ms, 2s, 1m"))),
        }
    }

    /// Fails on any argument not in `known`, so a typo is not silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<()> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(JobError::Arg(format!(
                "unknown argument {k:?} (this job takes: {})",
                known.join(", ")
            ))),
        }
    }

    /// The pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let number: u64 = text[..split].parse().ok()?;
    match &text[split..] {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number * 60)),
        _ => None,
    }
}

/// Object reads and writes a job's own code does, in its namespace's data area
/// (`data/NAME`). In a cluster they go to the space; [`crate::local`] keeps
/// them in memory so the same code runs in one process.
///
/// A worker writes behind: `put` may return before the write is acknowledged,
/// so that a slice computes while its output travels. Reads see earlier
/// writes (a `get` waits for writes of its name in flight), and every write is
/// acknowledged before the task's state is checkpointed, divided or finished,
/// so a checkpoint never records progress whose output could be lost.
pub trait Io {
    /// Reads object `name`.
    fn get(&mut self, name: &str) -> Result<Vec<u8>>;
    /// Writes object `name` (a new version if it exists). A failed write
    /// may be reported by a later call, or when the slice ends.
    fn put(&mut self, name: &str, value: &[u8]) -> Result<()>;
    /// Writes many objects; the space runtime sends them concurrently.
    fn put_many(&mut self, items: Vec<(String, Vec<u8>)>) -> Result<()> {
        items
            .iter()
            .try_for_each(|(name, value)| self.put(name, value))
    }
    /// A hint that object `name` will be read soon: a worker starts reading
    /// it now, so that the slice computing meanwhile does not wait for it
    /// later. The `get` of `name` that follows may return the value as it
    /// was at the hint; a `put` of `name` by this task drops the hint. In
    /// one process it does nothing.
    fn prefetch(&mut self, name: &str) {
        let _ = name;
    }
}

/// A kind of parallel job. One value of it exists per job on each node that
/// works on the job (made by [`Job::new`] from the job's arguments), so it can
/// cache inputs every task on the node shares.
pub trait Job: Sized + Send + Sync + 'static {
    /// The name users start it by: `p3ctl job run KIND`.
    const KIND: &'static str;
    /// One line for `p3ctl job kinds`.
    const ABOUT: &'static str;
    /// A task's state: what `divide` splits and a checkpoint saves.
    type State: Serialize + DeserializeOwned + Send + 'static;
    /// What a finished task produced.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Checks the arguments and builds this node's instance of the job.
    fn new(args: &Args) -> Result<Self>;

    /// Sets the job up: writes its inputs and returns the root task's state.
    /// Runs once, on the node that submits the job.
    fn main(&self, io: &mut dyn Io) -> Result<Self::State>;

    /// Runs one bounded slice of work on `state`. Keep a slice short (well under
    /// a second): stealing, checkpoints and cancellation wait for the next one.
    fn compute(&self, io: &mut dyn Io, state: &mut Self::State) -> Result<Step<Self::Output>>;

    /// Splits off part of the remaining work of `state` as a new task, or
    /// declines (`None`) when too little is left to be worth moving. Called
    /// at safe points, and on `main`'s state when the job is spread over the
    /// workers at submission (before any `restart`).
    fn divide(&self, state: &mut Self::State) -> Option<Self::State>;

    /// Readies this node for the job before it holds any task of it: loads
    /// what every task reads (a thief that loaded it only after its steal
    /// was answered would idle that long). Runs once per node that works on
    /// the job, alongside its first attempt to find work, so it must be safe
    /// to run while [`Job::restart`] or [`Job::compute`] runs. The default
    /// does nothing.
    fn prepare(&self, _io: &mut dyn Io) -> Result<()> {
        Ok(())
    }

    /// Prepares to continue `state` on this node after it arrived here: as a
    /// divided-off part, or from a checkpoint after its worker died.
    fn restart(&self, _io: &mut dyn Io, _state: &mut Self::State) -> Result<()> {
        Ok(())
    }

    /// The bytes saved for `state` (CBOR unless overridden).
    fn checkpoint(&self, state: &Self::State) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        ciborium::into_writer(state, &mut bytes)
            .map_err(|e| JobError::Codec(format!("task state: {e}")))?;
        Ok(bytes)
    }

    /// Turns the bytes of [`Job::checkpoint`] back into a state.
    fn resume(&self, bytes: &[u8]) -> Result<Self::State> {
        ciborium::from_reader(bytes).map_err(|e| JobError::Codec(format!("task state: {e}")))
    }

    /// An estimate of the work left in `state` (any unit, larger is more):
    /// thieves pick victims weighted by it.
    fn load(&self, _state: &Self::State) -> f64 {
        1.0
    }

    /// Combines the outputs of every finished task into the job's result. The
    /// default lists them.
    fn reduce(&self, outputs: Vec<Self::Output>) -> Result<serde_json::Value> {
        serde_json::to_value(outputs).map_err(|e| JobError::Codec(format!("outputs: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_and_refuse_clearly() {
        let args = Args::from_pairs(["n=256", "slice=100ms"]).unwrap();
        assert_eq!(args.get("n", 0u32).unwrap(), 256);
        assert_eq!(args.get("m", 7u32).unwrap(), 7);
        assert_eq!(
            args.duration("slice", Duration::ZERO).unwrap(),
            Duration::from_millis(100)
        );
        assert!(args
            .get::<u32>("slice", 0)
            .unwrap_err()
            .to_string()
            .contains("slice=100ms"));
        assert!(Args::from_pairs(["n"]).is_err());
        let typo = args.only(&["n"]).unwrap_err().to_string();
        assert!(
            typo.contains("\"slice\"") && typo.contains("takes: n"),
            "{typo}"
        );
    }
}
