//! `nqueens`: the number of ways to place n queens on an n×n board, an
//! irregular search tree. A task is a stack of partial boards (depth first);
//! `divide` gives away the shallowest boards, the largest subtrees, until they
//! hold half the estimated work.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::job::{Args, Io, Job, JobError, Result, Step};

/// The job kind.
pub struct NQueens {
    n: u32,
    nodes_per_slice: u64,
    /// `below[r]`: estimated size of the subtree under a board on row `r`
    /// (the board itself included); `below[n]` = 1.
    below: Vec<f64>,
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

impl Board {
    const EMPTY: Board = Board {
        row: 0,
        cols: 0,
        left: 0,
        right: 0,
    };
}

/// The boards still to explore and the solutions found so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    stack: Vec<Board>,
    solutions: u64,
}

/// Random descents from the empty board that estimate the tree's shape.
const PROBES: u32 = 4096;

impl NQueens {
    fn full(&self) -> u32 {
        (1u32 << self.n) - 1
    }

    fn free(&self, board: &Board) -> u32 {
        self.full() & !(board.cols | board.left | board.right)
    }

    /// Estimated work under a board: its own children (known exactly) times
    /// the estimated subtree of a board one row down. Splits by this are near
    /// even where a fixed branching factor per row (the tree's branching
    /// falls from n near the root to 1–2 near the leaves) made the shallow
    /// half far larger than the deep one.
    fn weight(&self, board: &Board) -> f64 {
        let next = (board.row as usize + 1).min(self.n as usize);
        1.0 + f64::from(self.free(board).count_ones()) * self.below[next]
    }

    fn child(&self, board: &Board, bit: u32) -> Board {
        Board {
            row: board.row + 1,
            cols: board.cols | bit,
            left: ((board.left | bit) << 1) & self.full(),
            right: (board.right | bit) >> 1,
        }
    }

    /// Knuth's estimate of the search tree ("Estimating the efficiency of
    /// backtrack programs", 1975): along a random descent, the product of
    /// the branching factors met above row `r` estimates the number of
    /// boards on row `r`; averaged over [`PROBES`] descents (seeded, so every
    /// worker computes the same table), the boards per row give the mean
    /// subtree under a board of each row.
    fn estimate_below(&self) -> Vec<f64> {
        let n = self.n as usize;
        let mut per_row = vec![0.0f64; n + 1];
        let mut rng = StdRng::seed_from_u64(u64::from(self.n));
        for _ in 0..PROBES {
            let mut board = Board::EMPTY;
            let mut boards = 1.0;
            per_row[0] += 1.0;
            while (board.row as usize) < n {
                let free = self.free(&board);
                let choices = free.count_ones();
                if choices == 0 {
                    break;
                }
                let mut bits = free;
                for _ in 0..rng.gen_range(0..choices) {
                    bits &= bits - 1;
                }
                board = self.child(&board, bits & bits.wrapping_neg());
                boards *= f64::from(choices);
                per_row[board.row as usize] += boards;
            }
        }
        let mut below = vec![1.0; n + 1];
        let mut deeper = 0.0;
        for row in (0..=n).rev() {
            deeper += per_row[row];
            if per_row[row] > 0.0 {
                below[row] = deeper / per_row[row];
            }
        }
        below
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
        let mut job = Self {
            n,
            nodes_per_slice: args.get("nodes_per_slice", 20_000)?.max(1),
            below: Vec::new(),
        };
        job.below = job.estimate_below();
        Ok(job)
    }

    fn main(&self, _io: &mut dyn Io) -> Result<Search> {
        Ok(Search {
            stack: vec![Board::EMPTY],
            solutions: 0,
        })
    }

    fn compute(&self, _io: &mut dyn Io, search: &mut Search) -> Result<Step<u64>> {
        for _ in 0..self.nodes_per_slice {
            let Some(board) = search.stack.pop() else {
                break;
            };
            if board.row == self.n {
                search.solutions += 1;
                continue;
            }
            let mut free = self.free(&board);
            while free != 0 {
                let bit = free & free.wrapping_neg();
                free &= free - 1;
                search.stack.push(self.child(&board, bit));
            }
        }
        Ok(if search.stack.is_empty() {
            Step::Done(search.solutions)
        } else {
            Step::More
        })
    }

    fn divide(&self, search: &mut Search) -> Option<Search> {
        // A single board (the root, or a thief's last) is replaced by its
        // children, as `compute` would do next: the search is the same, and
        // children can be shared. Without this the root never divides and
        // a job cannot be spread at submission.
        while let [board] = search.stack[..] {
            if board.row == self.n {
                return None;
            }
            search.stack.clear();
            let mut free = self.free(&board);
            while free != 0 {
                let bit = free & free.wrapping_neg();
                free &= free - 1;
                search.stack.push(self.child(&board, bit));
            }
        }
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

    fn job(n: u32, nodes_per_slice: u64) -> NQueens {
        let args = Args::from_pairs([
            format!("n={n}"),
            format!("nodes_per_slice={nodes_per_slice}"),
        ]);
        NQueens::new(&args.unwrap()).unwrap()
    }

    /// Boards explored from `search` to the end.
    fn boards(job: &NQueens, search: &Search) -> u64 {
        let mut stack = search.stack.clone();
        let mut count = 0;
        while let Some(board) = stack.pop() {
            count += 1;
            let mut free = job.free(&board);
            while free != 0 {
                let bit = free & free.wrapping_neg();
                free &= free - 1;
                stack.push(job.child(&board, bit));
            }
        }
        count
    }

    #[test]
    fn estimates_the_tree_near_its_real_size() {
        // 8 queens: 1 + 8 + 42 + 140 + 344 + 568 + 550 + 312 + 92 boards.
        let eight = job(8, 1);
        assert_eq!(
            boards(
                &eight,
                &eight.main(&mut crate::local::MemoryIo::default()).unwrap()
            ),
            2057
        );
        for n in [8, 11] {
            let job = job(n, 1);
            let root = job.main(&mut crate::local::MemoryIo::default()).unwrap();
            let (real, estimated) = (boards(&job, &root) as f64, job.load(&root));
            assert!(
                (estimated / real - 1.0).abs() < 0.1,
                "n={n}: {estimated} estimated, {real} real"
            );
        }
    }

    #[test]
    fn divides_into_near_equal_work() {
        // With 3^(n - row) as every board's weight (before): 0.70, 0.60, 0.73.
        for (n, slice) in [(12, 40), (13, 500), (14, 20_000)] {
            let job = job(n, slice);
            let mut search = job.main(&mut crate::local::MemoryIo::default()).unwrap();
            job.compute(&mut crate::local::MemoryIo::default(), &mut search)
                .unwrap();
            let given = job.divide(&mut search).unwrap();
            let (kept, given) = (boards(&job, &search), boards(&job, &given));
            let ratio = kept.min(given) as f64 / kept.max(given) as f64;
            assert!(ratio > 0.8, "n={n}: halves of {kept} and {given} boards");
        }
    }

    #[test]
    fn divides_the_root_into_mirror_halves() {
        for n in [8, 12] {
            let job = job(n, 1);
            let mut search = job.main(&mut crate::local::MemoryIo::default()).unwrap();
            let all = boards(&job, &search);
            let given = job.divide(&mut search).expect("the root divides");
            let (kept, given) = (boards(&job, &search), boards(&job, &given));
            // The root itself was expanded, not explored.
            assert_eq!(kept + given, all - 1, "n={n}");
            assert_eq!(kept, given, "n={n}: the first row's halves mirror");
        }
        let one = job(1, 1);
        let mut search = one.main(&mut crate::local::MemoryIo::default()).unwrap();
        assert!(one.divide(&mut search).is_none(), "one queen: one board");
        assert_eq!(one.load(&search), 1.0, "its one solution left to count");
    }

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
