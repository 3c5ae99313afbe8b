//! `sleep`: synthetic work of a given total duration cut into slices of a given
//! length. It uses no CPU, so it measures how well the scheduler spreads work
//! over workers independent of how many cores the machine has.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::{Args, Io, Job, JobError, Result, Step};

/// The job kind.
pub struct Sleep {
    total: Duration,
    slice: Duration,
}

/// Slices left to sleep, and slept so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slices {
    left: u64,
    slept: u64,
}

impl Job for Sleep {
    const KIND: &'static str = "sleep";
    const ABOUT: &'static str =
        "sleep for total=10s in slices of slice=100ms; result: slices slept (= total/slice)";
    type State = Slices;
    type Output = u64;

    fn new(args: &Args) -> Result<Self> {
        args.only(&["total", "slice"])?;
        let total = args.duration("total", Duration::from_secs(10))?;
        let slice = args.duration("slice", Duration::from_millis(100))?;
        if slice.is_zero() || slice > Duration::from_secs(60) || total < slice {
            return Err(JobError::Arg(format!(
                "slice={slice:?} must be between 1ms and 60s and not above total={total:?}"
            )));
        }
        Ok(Self { total, slice })
    }

    fn main(&self, _io: &mut dyn Io) -> Result<Slices> {
        Ok(Slices {
            left: (self.total.as_nanos() / self.slice.as_nanos()) as u64,
            slept: 0,
        })
    }

    fn compute(&self, _io: &mut dyn Io, slices: &mut Slices) -> Result<Step<u64>> {
        if slices.left > 0 {
            std::thread::sleep(self.slice);
            slices.left -= 1;
            slices.slept += 1;
        }
        Ok(if slices.left == 0 {
            Step::Done(slices.slept)
        } else {
            Step::More
        })
    }

    fn divide(&self, slices: &mut Slices) -> Option<Slices> {
        if slices.left < 2 {
            return None;
        }
        let part = slices.left / 2;
        slices.left -= part;
        Some(Slices {
            left: part,
            slept: 0,
        })
    }

    fn load(&self, slices: &Slices) -> f64 {
        slices.left as f64
    }

    fn reduce(&self, outputs: Vec<u64>) -> Result<serde_json::Value> {
        let slept: u64 = outputs.iter().sum();
        Ok(serde_json::json!({
            "slices": slept,
            "slice_ms": self.slice.as_millis() as u64,
            "expected": (self.total.as_nanos() / self.slice.as_nanos()) as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::run_local;

    #[test]
    fn sleeps_every_slice_exactly_once() {
        let args = Args::from_pairs(["total=40ms", "slice=2ms"]).unwrap();
        for divide_every in [None, Some(2)] {
            let run = run_local(&crate::jobs::builtin(), "sleep", &args, divide_every).unwrap();
            assert_eq!(run.result["slices"], 20, "{divide_every:?}");
            assert!(run.elapsed >= Duration::from_millis(40));
        }
        assert!(Sleep::new(&Args::from_pairs(["slice=0ms"]).unwrap()).is_err());
    }
}
