//! `matmul`: C = A × B for n×n integer matrices, the example of the P³ paper.
//!
//! `main` writes A in blocks of `rows_per_slice` rows (`A/b`, block b) and B
//! as one object (`B`, column-major), so a worker loads B with one read and a
//! slice reads one block. Entries of A and B (-9..=9) are stored as one byte
//! each and entries of C (at most 81·n in magnitude) as four: the space
//! carries what the numbers need, not eight bytes each. A task is a range of
//! rows of C; a slice computes the rows left in its block of A and writes
//! them as one object (`C/i`, the first row computed); `divide` gives away
//! the upper half of the rows left. The output is a checksum of C that does
//! not depend on how the rows were split, so a cluster run can be compared
//! with a run in one process.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::job::{Args, Io, Job, JobError, Result, Step};

/// The job kind.
pub struct Matmul {
    n: usize,
    seed: u64,
    rows_per_slice: usize,
    /// B, column-major, loaded once per node and shared by its tasks.
    columns: Mutex<Option<Arc<Vec<i64>>>>,
}

/// Rows `next..end` of C are still to be computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rows {
    next: usize,
    end: usize,
    checksum: u64,
}

/// A few mixing rounds of splitmix64: entries and checksum weights that look
/// random but are the same on every node.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Matmul {
    /// Entry `(row, col)` of matrix `which` (0 = A, 1 = B), in -9..=9.
    fn entry(&self, which: u64, row: usize, col: usize) -> i64 {
        let cell = (row * self.n + col) as u64;
        (mix(self.seed ^ (which << 62) ^ cell) % 19) as i64 - 9
    }

    /// What C[i][j] adds to the checksum.
    fn weigh(&self, i: usize, j: usize, value: i64) -> u64 {
        (value as u64).wrapping_mul(mix((i * self.n + j) as u64) | 1)
    }

    fn columns(&self, io: &mut dyn Io) -> Result<Arc<Vec<i64>>> {
        let mut cached = self.columns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(columns) = cached.as_ref() {
            return Ok(columns.clone());
        }
        let columns = Arc::new(decode_entries(&io.get("B")?, self.n * self.n)?);
        *cached = Some(columns.clone());
        Ok(columns)
    }
}

/// Entries of A or B, one byte each.
fn encode_entries(values: impl Iterator<Item = i64>) -> Vec<u8> {
    values.map(|v| v as i8 as u8).collect()
}

/// `count` entries of A or B from `bytes`, widened for the products.
fn decode_entries(bytes: &[u8], count: usize) -> Result<Vec<i64>> {
    if bytes.len() != count {
        return Err(JobError::Failed(format!(
            "a matrix block of {} bytes, expected {count}",
            bytes.len()
        )));
    }
    Ok(bytes.iter().map(|&b| i64::from(b as i8)).collect())
}

/// Entries of C, four bytes each: |C[i][j]| ≤ 9 · 9 · n, and n ≤ 8192.
fn encode_products(values: &[i64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| (v as i32).to_le_bytes())
        .collect()
}

impl Job for Matmul {
    const KIND: &'static str = "matmul";
    const ABOUT: &'static str =
        "C = A×B for n×n matrices (args: n=256, seed=1, rows_per_slice=n/32); result: checksum of C";
    type State = Rows;
    type Output = u64;

    fn new(args: &Args) -> Result<Self> {
        args.only(&["n", "seed", "rows_per_slice"])?;
        let n: usize = args.get("n", 256)?;
        if !(1..=8192).contains(&n) {
            return Err(JobError::Arg(format!("n={n}: use 1 to 8192")));
        }
        let rows_per_slice = args.get("rows_per_slice", (n / 32).max(1))?.max(1);
        Ok(Self {
            n,
            seed: args.get("seed", 1)?,
            rows_per_slice,
            columns: Mutex::new(None),
        })
    }

    fn main(&self, io: &mut dyn Io) -> Result<Rows> {
        let (n, r) = (self.n, self.rows_per_slice);
        let mut items: Vec<(String, Vec<u8>)> = (0..n.div_ceil(r))
            .map(|b| {
                let rows = b * r..((b + 1) * r).min(n);
                let block = rows.flat_map(|i| (0..n).map(move |k| (i, k)));
                (
                    format!("A/{b}"),
                    encode_entries(block.map(|(i, k)| self.entry(0, i, k))),
                )
            })
            .collect();
        let columns = (0..n).flat_map(|j| (0..n).map(move |k| (k, j)));
        items.push((
            "B".into(),
            encode_entries(columns.map(|(k, j)| self.entry(1, k, j))),
        ));
        io.put_many(items)?;
        Ok(Rows {
            next: 0,
            end: n,
            checksum: 0,
        })
    }

    fn prepare(&self, io: &mut dyn Io) -> Result<()> {
        self.columns(io).map(drop)
    }

    fn restart(&self, io: &mut dyn Io, _rows: &mut Rows) -> Result<()> {
        self.columns(io).map(drop)
    }

    fn compute(&self, io: &mut dyn Io, rows: &mut Rows) -> Result<Step<u64>> {
        let (n, r) = (self.n, self.rows_per_slice);
        let columns = self.columns(io)?;
        let first = rows.next;
        let b = first / r;
        let block_first = b * r;
        let last = ((b + 1) * r).min(rows.end);
        let a_rows = decode_entries(
            &io.get(&format!("A/{b}"))?,
            (((b + 1) * r).min(n) - block_first) * n,
        )?;
        if last < rows.end {
            // The next block travels while this one is multiplied.
            io.prefetch(&format!("A/{}", b + 1));
        }
        let mut block = Vec::with_capacity((last - first) * n);
        for i in first..last {
            let a = &a_rows[(i - block_first) * n..(i - block_first + 1) * n];
            for (j, column) in columns.chunks_exact(n).enumerate() {
                let c: i64 = a.iter().zip(column).map(|(x, y)| x * y).sum();
                rows.checksum = rows.checksum.wrapping_add(self.weigh(i, j, c));
                block.push(c);
            }
        }
        io.put(&format!("C/{first}"), &encode_products(&block))?;
        rows.next = last;
        Ok(if rows.next >= rows.end {
            Step::Done(rows.checksum)
        } else {
            Step::More
        })
    }

    fn divide(&self, rows: &mut Rows) -> Option<Rows> {
        let left = rows.end - rows.next;
        if left < 2 {
            return None;
        }
        let middle = rows.next + left.div_ceil(2);
        let part = Rows {
            next: middle,
            end: rows.end,
            checksum: 0,
        };
        rows.end = middle;
        Some(part)
    }

    fn load(&self, rows: &Rows) -> f64 {
        (rows.end - rows.next) as f64
    }

    fn reduce(&self, outputs: Vec<u64>) -> Result<serde_json::Value> {
        let checksum = outputs.into_iter().fold(0u64, u64::wrapping_add);
        Ok(serde_json::json!({ "n": self.n, "checksum": checksum }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{run_local, MemoryIo};

    /// Objects in memory, counting the reads of each and noting the hints.
    #[derive(Default)]
    struct Counting {
        objects: MemoryIo,
        reads: std::collections::HashMap<String, usize>,
        hinted: Vec<String>,
    }

    impl Io for Counting {
        fn get(&mut self, name: &str) -> Result<Vec<u8>> {
            *self.reads.entry(name.to_owned()).or_default() += 1;
            self.objects.get(name)
        }

        fn put(&mut self, name: &str, value: &[u8]) -> Result<()> {
            self.objects.put(name, value)
        }

        fn prefetch(&mut self, name: &str) {
            self.hinted.push(name.to_owned());
        }
    }

    #[test]
    fn a_slice_hints_the_next_block_of_its_own_rows_only() {
        let args = Args::from_pairs(["n=16", "rows_per_slice=4"]).unwrap();
        let job = Matmul::new(&args).unwrap();
        let mut io = Counting::default();
        let mut rows = job.main(&mut io).unwrap();
        // Rows 8..16 go to a thief: this task keeps blocks 0 and 1.
        let mut part = job.divide(&mut rows).expect("divisible");
        while let Step::More = job.compute(&mut io, &mut rows).unwrap() {}
        assert_eq!(io.hinted, ["A/1"]);
        io.hinted.clear();
        while let Step::More = job.compute(&mut io, &mut part).unwrap() {}
        assert_eq!(io.hinted, ["A/3"]);
        // Every hinted block was read, once.
        assert!(
            (0..4).all(|b| io.reads[&format!("A/{b}")] == 1),
            "{:?}",
            io.reads
        );
    }

    #[test]
    fn a_prepared_node_starts_a_stolen_part_without_reading_b_again() {
        let args = Args::from_pairs(["n=16", "rows_per_slice=4"]).unwrap();
        let mut io = Counting::default();
        let mut rows = Matmul::new(&args).unwrap().main(&mut io).unwrap();
        let victim = Matmul::new(&args).unwrap();
        let mut part = victim.divide(&mut rows).expect("divisible");
        // Another node's instance: it loads B when it joins the job, before
        // any part reaches it, and never again.
        let thief = Matmul::new(&args).unwrap();
        thief.prepare(&mut io).unwrap();
        assert_eq!(io.reads["B"], 1);
        thief.restart(&mut io, &mut part).unwrap();
        while let Step::More = thief.compute(&mut io, &mut part).unwrap() {}
        assert_eq!(io.reads["B"], 1, "B was read again after prepare");
    }

    #[test]
    fn entries_take_one_byte_and_products_four_without_loss() {
        let entries: Vec<i64> = (-9..=9).collect();
        let bytes = encode_entries(entries.iter().copied());
        assert_eq!(bytes.len(), entries.len());
        assert_eq!(decode_entries(&bytes, entries.len()).unwrap(), entries);
        assert!(decode_entries(&bytes, entries.len() + 1).is_err());
        // The largest product n = 8192 allows, either sign.
        let extreme = 81 * 8192;
        let products = encode_products(&[extreme, -extreme]);
        let back: Vec<i32> = products
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, [extreme as i32, -extreme as i32]);
    }

    #[test]
    fn checksum_matches_a_plain_triple_loop_however_rows_are_split() {
        let args = Args::from_pairs(["n=24", "seed=7", "rows_per_slice=5"]).unwrap();
        let job = Matmul::new(&args).unwrap();
        let mut expected = 0u64;
        for i in 0..24 {
            for j in 0..24 {
                let c: i64 = (0..24)
                    .map(|k| job.entry(0, i, k) * job.entry(1, k, j))
                    .sum();
                expected = expected.wrapping_add(job.weigh(i, j, c));
            }
        }
        let whole = run_local(&crate::jobs::builtin(), "matmul", &args, None).unwrap();
        assert_eq!(whole.result["checksum"], expected);
        let split = run_local(&crate::jobs::builtin(), "matmul", &args, Some(3)).unwrap();
        assert_eq!(split.result["checksum"], expected);
        assert!(split.tasks > 1, "{} tasks", split.tasks);
    }
}
