//! # p3-scheduler — parallel jobs as conventions on the object space
//!
//! The P³ programming model ([`Job`]: `main` / `compute` / `divide` /
//! `restart` / `checkpoint` / `reduce`), and the runtime that runs jobs on
//! every node that joins:
//! - [`job`]: the trait a job kind implements, and its arguments and errors;
//! - [`registry`]: the job kinds a binary knows; [`jobs`]: the built-in ones;
//! - [`records`]: the objects a job consists of — the conventions every node
//!   follows (tasks under leased write locks, heartbeats, steal requests and
//!   grants, checkpoints, results); [`credit`]: how a job knows it is done;
//! - [`worker`]: a node's worker: claims tasks, steals work, divides for
//!   thieves, resumes tasks whose workers died;
//! - [`control`]: submitting, watching and cancelling jobs (`p3ctl job`);
//!   [`spread`]: a new job divided among the workers there are at submission;
//! - [`local`]: the same job code in one process, without the space.
//!
//! - [`objects`]: the operations job control needs, over the client or the
//!   in-process engine; [`io`]: job code's reads and writes.
//!
//! What it must never do: talk to other nodes except through the object space
//! (it only uses [`p3_objectspace::Space`] and [`p3_objectspace::Local`]); decide a job is finished before
//! all its credit is back; let a worker that lost a task's lock write to it.

pub mod control;
pub mod credit;
pub mod io;
pub mod job;
pub mod jobs;
pub mod local;
pub mod objects;
pub mod records;
pub mod registry;
pub mod spread;
pub mod worker;

pub use job::{Args, Io, Job, JobError, Result, Step};
pub use registry::Registry;
pub use worker::{Worker, WorkerConfig};
