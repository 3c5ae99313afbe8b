//! The job kinds `p3ctl` ships with: examples of the model and the workloads the
//! tests and benchmarks run.

pub mod matmul;
pub mod nqueens;
pub mod sleep;
pub mod sum;

use crate::registry::Registry;

/// A registry with every built-in job kind.
pub fn builtin() -> Registry {
    Registry::new()
        .with::<matmul::Matmul>()
        .with::<nqueens::NQueens>()
        .with::<sum::Sum>()
        .with::<sleep::Sleep>()
}
