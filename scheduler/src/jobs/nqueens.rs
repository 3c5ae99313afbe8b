//! `nqueens`: the number of ways to place n queens on an n×n board, an
//! irregular search tree. A task is a stack of partial boards (depth first);
//! `divide` gives away the shallowest boards, the largest subtrees, until they
//! hold half the estimated work.

use serde::{Deserialize, Serialize};

use crate::job::{Args, Io, Job, JobError, Result, Step};

/// The job kind.
pub struct NQueens {
    n: u32,
    nodes_per_slice: u64,
}

/// A partial board: queens on rows `0..row`, as bitmasks of the columns and
/// diagonals they attack.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Board {
    row: u32,
    cols: u32,
    left: u32,
    right: u32,
}

/// The boards still to explore and the solutions found so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    stack: Vec<Board>,
    solutions: u64,
}

impl NQueens {
    /// Estimated work under a board: a board near the root holds
    /// exponentially more than a deep one (about three branches per row in
    /// the part of the tree that matters).
    fn weight(&self, board: &Board) -> f64 {
        3f64.powi(self.n.saturating_sub(board.row) as i32)
    }
}

impl Job for NQueens {
    const KIND: &'static str = "nqueens";
    const ABOUT: &'static str =
        "count the solutions of n queens (args: n=11, nodes_per_slice=20000); result: solutions";
    type State = Search;
    type Output = u64;

    fn new(args: &Args) -> Result<Self> {
        args.only(&["n", "nodes_per_slice"])?;
        let n: u32 = args.get("n", 11)?;
        if !(1..=20).contains(&n) {
            return Err(JobError::Arg(format!("n={n}: use 1 to 20")));
        }
        Ok(Self {
            n,
            nodes_per_slice: args.get("nodes_per_slice", 20_000)?.max(1),
        })
    }

    fn main(&self, _io: &mut dyn Io) -> Result<Search> {
        Ok(Search {
            stack: vec![Board {
                row: 0,
                cols: 0,
                left: 0,
                right: 0,
            }],
            solutions: 0,
        })
    }

    fn compute(&self, _io: &mut dyn Io, search: &mut Search) -> Result<Step<u64>> {
        let full = (1u32 << self.n) - 1;
        for _ in 0..self.nodes_per_slice {
            let Some(board) = search.stack.pop() else {
                break;
            };
            if board.row == self.n {
                search.solutions += 1;
                continue;
            }
            let mut free = full & !(board.cols | board.left | board.right);
            while free != 0 {
                let bit = free & free.wrapping_neg();
                free &= free - 1;
                search.stack.push(Board {
                    row: board.row + 1,
                    cols: board.cols | bit,
                    left: ((board.left | bit) << 1) & full,
                    right: (board.right | bit) >> 1,
                });
            }
        }
        Ok(if search.stack.is_empty() {
            Step::Done(search.solutions)
        } else {
            Step::More
        })
    }

    fn divide(&self, search: &mut Search) -> Option<Search> {
        if search.stack.len() < 2 {
            return None;
        }
        // The shallowest boards (the bottom of the stack) until they hold
        // half the estimated work; at least one board goes, one stays.
        let half = self.load(search) / 2.0;
        let mut given = 0.0;
        let mut count = 0;
        for board in &search.stack[..search.stack.len() - 1] {
            if count > 0 && given + self.weight(board) > half {
                break;
            }
            given += self.weight(board);
            count += 1;
        }
        Some(Search {
            stack: search.stack.drain(..count).collect(),
            solutions: 0,
        })
    }

    fn load(&self, search: &Search) -> f64 {
        search.stack.iter().map(|b| self.weight(b)).sum()
    }

    fn reduce(&self, outputs: Vec<u64>) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "n": self.n, "solutions": outputs.iter().sum::<u64>() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::run_local;

    #[test]
    fn counts_known_solutions_whole_and_divided() {
        let registry = crate::jobs::builtin();
        for (n, solutions) in [(1, 1), (4, 2), (6, 4), (8, 92), (10, 724)] {
            let args = Args::from_pairs([format!("n={n}"), "nodes_per_slice=50".into()]).unwrap();
            for divide_every in [None, Some(2)] {
                let run = run_local(&registry, "nqueens", &args, divide_every).unwrap();
                assert_eq!(run.result["solutions"], solutions, "n={n} {divide_every:?}");
            }
        }
    }
}
