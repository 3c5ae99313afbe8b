//! The job kinds a binary knows, registered statically and used through one
//! object-safe interface so the runtime can hold jobs of every kind together.

use std::{any::Any, collections::BTreeMap, sync::Arc};

use crate::job::{Args, Io, Job, JobError, Result, Step};

/// A task state whose type only its job kind knows.
pub type AnyState = Box<dyn Any + Send>;

/// [`Job`] with its types erased: states are [`AnyState`], outputs CBOR bytes.
pub trait DynJob: Send + Sync {
    /// See [`Job::main`].
    fn main(&self, io: &mut dyn Io) -> Result<AnyState>;
    /// See [`Job::compute`]; a finished task's output comes back encoded.
    fn compute(&self, io: &mut dyn Io, state: &mut AnyState) -> Result<Step<Vec<u8>>>;
    /// See [`Job::divide`].
    fn divide(&self, state: &mut AnyState) -> Option<AnyState>;
    /// See [`Job::prepare`].
    fn prepare(&self, io: &mut dyn Io) -> Result<()>;
    /// See [`Job::restart`].
    fn restart(&self, io: &mut dyn Io, state: &mut AnyState) -> Result<()>;
    /// See [`Job::checkpoint`].
    fn checkpoint(&self, state: &AnyState) -> Result<Vec<u8>>;
    /// See [`Job::resume`].
    fn resume(&self, bytes: &[u8]) -> Result<AnyState>;
    /// See [`Job::load`].
    fn load(&self, state: &AnyState) -> f64;
    /// See [`Job::reduce`]; takes the encoded outputs.
    fn reduce(&self, outputs: &[Vec<u8>]) -> Result<serde_json::Value>;

    /// Whether `state` can be divided now, tried on a copy: `state` stays
    /// as it is.
    fn divisible(&self, state: &AnyState) -> Result<bool> {
        let mut trial = self.resume(&self.checkpoint(state)?)?;
        Ok(self.divide(&mut trial).is_some())
    }
    /// Splits up to `n` parts off `state`, always dividing whichever piece
    /// has the most work left (by [`Job::load`]), so that pieces come out
    /// near equal although `divide` splits one piece in two.
    fn split(&self, state: &mut AnyState, n: usize) -> Vec<AnyState> {
        let mut parts: Vec<AnyState> = Vec::new();
        while parts.len() < n {
            let (largest, _) = parts
                .iter()
                .enumerate()
                .map(|(i, p)| (Some(i), self.load(p)))
                .fold((None, self.load(state)), |best, next| {
                    if next.1 > best.1 {
                        next
                    } else {
                        best
                    }
                });
            let piece = match largest {
                None => &mut *state,
                Some(i) => &mut parts[i],
            };
            match self.divide(piece) {
                Some(part) => parts.push(part),
                None => break, // the largest piece cannot be divided: none can
            }
        }
        parts
    }
}

fn state_of<J: Job>(state: &AnyState) -> Result<&J::State> {
    state
        .downcast_ref()
        .ok_or_else(|| JobError::Codec(format!("a task state that is not {}'s", J::KIND)))
}

fn state_of_mut<J: Job>(state: &mut AnyState) -> Result<&mut J::State> {
    state
        .downcast_mut()
        .ok_or_else(|| JobError::Codec(format!("a task state that is not {}'s", J::KIND)))
}

impl<J: Job> DynJob for J {
    fn main(&self, io: &mut dyn Io) -> Result<AnyState> {
        Ok(Box::new(Job::main(self, io)?))
    }

    fn compute(&self, io: &mut dyn Io, state: &mut AnyState) -> Result<Step<Vec<u8>>> {
        match Job::compute(self, io, state_of_mut::<J>(state)?)? {
            Step::More => Ok(Step::More),
            Step::Done(output) => {
                let mut bytes = Vec::new();
                ciborium::into_writer(&output, &mut bytes)
                    .map_err(|e| JobError::Codec(format!("task output: {e}")))?;
                Ok(Step::Done(bytes))
            }
        }
    }

    fn divide(&self, state: &mut AnyState) -> Option<AnyState> {
        let state = state_of_mut::<J>(state).ok()?;
        Job::divide(self, state).map(|part| Box::new(part) as AnyState)
    }

    fn prepare(&self, io: &mut dyn Io) -> Result<()> {
        Job::prepare(self, io)
    }

    fn restart(&self, io: &mut dyn Io, state: &mut AnyState) -> Result<()> {
        Job::restart(self, io, state_of_mut::<J>(state)?)
    }

    fn checkpoint(&self, state: &AnyState) -> Result<Vec<u8>> {
        Job::checkpoint(self, state_of::<J>(state)?)
    }

    fn resume(&self, bytes: &[u8]) -> Result<AnyState> {
        Ok(Box::new(Job::resume(self, bytes)?))
    }

    fn load(&self, state: &AnyState) -> f64 {
        state_of::<J>(state).map_or(0.0, |s| Job::load(self, s))
    }

    fn reduce(&self, outputs: &[Vec<u8>]) -> Result<serde_json::Value> {
        let outputs = outputs
            .iter()
            .map(|bytes| {
                ciborium::from_reader(bytes.as_slice())
                    .map_err(|e| JobError::Codec(format!("task output: {e}")))
            })
            .collect::<Result<Vec<J::Output>>>()?;
        Job::reduce(self, outputs)
    }
}

type Maker = fn(&Args) -> Result<Arc<dyn DynJob>>;

fn make<J: Job>(args: &Args) -> Result<Arc<dyn DynJob>> {
    Ok(Arc::new(J::new(args)?))
}

/// The job kinds a binary can run, by name. A node's worker only works on jobs
/// whose kind its binary registered.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, (&'static str, Maker)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds job kind `J` (replacing one of the same name).
    pub fn with<J: Job>(mut self) -> Self {
        self.kinds.insert(J::KIND, (J::ABOUT, make::<J>));
        self
    }

    /// Builds this node's instance of a job of `kind` from its arguments.
    pub fn instantiate(&self, kind: &str, args: &Args) -> Result<Arc<dyn DynJob>> {
        let (_, maker) = self
            .kinds
            .get(kind)
            .ok_or_else(|| JobError::UnknownKind(kind.to_owned()))?;
        maker(args)
    }

    /// Whether `kind` is registered.
    pub fn knows(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// `(kind, one-line description)` of every registered kind.
    pub fn kinds(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.kinds.iter().map(|(k, (about, _))| (*k, *about))
    }
}
