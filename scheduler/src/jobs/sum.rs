//! `sum`: the sum of the integers `from..=to`, a chunk per slice; `divide`
//! gives away the upper half of what is left. Checked against n(n+1)/2.

use serde::{Deserialize, Serialize};

use crate::job::{Args, Io, Job, JobError, Result, Step};

/// The job kind.
pub struct Sum {
    from: u64,
    to: u64,
    chunk: u64,
}

/// Numbers `next..=last` are still to be added to `total`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Range {
    next: u64,
    last: u64,
    /// Decimal, so any u128 survives every encoding.
    total: String,
}

fn total_of(range: &Range) -> Result<u128> {
    range
        .total
        .parse()
        .map_err(|e| JobError::Codec(format!("partial sum {:?}: {e}", range.total)))
}

impl Job for Sum {
    const KIND: &'static str = "sum";
    const ABOUT: &'static str =
        "the sum of from..=to (args: from=1, to=1000000000, chunk=1000000); result: sum";
    type State = Range;
    type Output = String;

    fn new(args: &Args) -> Result<Self> {
        args.only(&["from", "to", "chunk"])?;
        let (from, to) = (args.get("from", 1)?, args.get("to", 1_000_000_000)?);
        if from > to {
            return Err(JobError::Arg(format!("from={from} is above to={to}")));
        }
        Ok(Self {
            from,
            to,
            chunk: args.get("chunk", 1_000_000)?.max(1),
        })
    }

    fn main(&self, _io: &mut dyn Io) -> Result<Range> {
        Ok(Range {
            next: self.from,
            last: self.to,
            total: "0".into(),
        })
    }

    fn compute(&self, _io: &mut dyn Io, range: &mut Range) -> Result<Step<String>> {
        let end = range.next.saturating_add(self.chunk - 1).min(range.last);
        let mut total = total_of(range)?;
        let mut i = range.next;
        loop {
            total += u128::from(i);
            if i == end {
                break;
            }
            i += 1;
        }
        range.total = total.to_string();
        if end == range.last {
            return Ok(Step::Done(range.total.clone()));
        }
        range.next = end + 1;
        Ok(Step::More)
    }

    fn divide(&self, range: &mut Range) -> Option<Range> {
        let left = range.last - range.next + 1;
        if left < 2 * self.chunk {
            return None;
        }
        let middle = range.next + left / 2;
        let part = Range {
            next: middle,
            last: range.last,
            total: "0".into(),
        };
        range.last = middle - 1;
        Some(part)
    }

    fn load(&self, range: &Range) -> f64 {
        (range.last - range.next) as f64
    }

    fn reduce(&self, outputs: Vec<String>) -> Result<serde_json::Value> {
        let mut sum = 0u128;
        for part in outputs {
            sum += part
                .parse::<u128>()
                .map_err(|e| JobError::Codec(format!("partial sum {part:?}: {e}")))?;
        }
        Ok(serde_json::json!({ "from": self.from, "to": self.to, "sum": sum.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::run_local;

    #[test]
    fn matches_the_closed_form_whole_and_divided() {
        let args = Args::from_pairs(["from=3", "to=100003", "chunk=1000"]).unwrap();
        let expected = (100_003u128 * 100_004 / 2 - 3).to_string();
        for divide_every in [None, Some(3)] {
            let run = run_local(&crate::jobs::builtin(), "sum", &args, divide_every).unwrap();
            assert_eq!(run.result["sum"], expected.as_str(), "{divide_every:?}");
        }
    }
}
