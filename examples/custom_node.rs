//! A node binary with a job kind of its own: `primes` counts the primes below
//! `to`. Build it, start nodes with it instead of `p3ctl`, and submit:
//!
//! ```text
//! cargo build --example custom_node
//! target/debug/examples/custom_node node start --data-dir /tmp/n0 --listen /ip4/127.0.0.1/tcp/0
//! target/debug/examples/custom_node job run primes --arg to=10000000 --wait --data-dir /tmp/n0
//! ```
//!
//! Every node that should work on `primes` jobs must run a binary that
//! registers it; nodes running plain `p3ctl` store the job's objects but leave
//! its tasks alone.

use std::process::ExitCode;

use p3::scheduler::{jobs, Args, Io, Job, JobError, Result, Step};
use serde::{Deserialize, Serialize};

/// The job kind: one value per job on each node, built from the job's arguments.
struct Primes {
    to: u64,
}

/// A task: the numbers `next..end` are still to be tested.
#[derive(Serialize, Deserialize)]
struct Range {
    next: u64,
    end: u64,
    found: u64,
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

impl Job for Primes {
    const KIND: &'static str = "primes";
    const ABOUT: &'static str = "count the primes below to=1000000";
    type State = Range;
    type Output = u64;

    fn new(args: &Args) -> Result<Self> {
        args.only(&["to"])?;
        let to = args.get("to", 1_000_000)?;
        if to == 0 {
            return Err(JobError::Arg("to must be above 0".into()));
        }
        Ok(Self { to })
    }

    /// Nothing to write into the space; the root task is the whole range.
    fn main(&self, _io: &mut dyn Io) -> Result<Range> {
        Ok(Range {
            next: 0,
            end: self.to,
            found: 0,
        })
    }

    /// A slice tests up to 10 000 numbers, so safe points come often.
    fn compute(&self, _io: &mut dyn Io, range: &mut Range) -> Result<Step<u64>> {
        let stop = (range.next + 10_000).min(range.end);
        range.found += (range.next..stop).filter(|&n| is_prime(n)).count() as u64;
        range.next = stop;
        Ok(if range.next == range.end {
            Step::Done(range.found)
        } else {
            Step::More
        })
    }

    /// Gives a thief the upper half of what is left.
    fn divide(&self, range: &mut Range) -> Option<Range> {
        let left = range.end - range.next;
        if left < 20_000 {
            return None;
        }
        let middle = range.next + left / 2;
        let part = Range {
            next: middle,
            end: range.end,
            found: 0,
        };
        range.end = middle;
        Some(part)
    }

    fn load(&self, range: &Range) -> f64 {
        (range.end - range.next) as f64
    }

    fn reduce(&self, outputs: Vec<u64>) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "below": self.to, "primes": outputs.iter().sum::<u64>() }))
    }
}

fn main() -> ExitCode {
    p3::cli::main_with(&jobs::builtin().with::<Primes>())
}
