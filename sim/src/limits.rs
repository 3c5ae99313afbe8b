//! The process's open-file limit, which bounds N: every simulated node holds
//! its RocksDB's files and its runtime's descriptors for as long as it runs.

use crate::SimError;

/// Descriptors one running node holds, measured at rest after joining
/// (`/proc/PID/fd` of `p3sim`): RocksDB 15 (a directory handle for the
/// database and one for each of its 11 column families, its write-ahead
/// log, manifest and lock) and its Tokio runtime 4 (two epoll handles, a
/// waker, and a copy of the signal pipe that comes with Tokio's I/O
/// driver). Table files opened as data grows come on top.
pub const PER_NODE: u64 = 19;

/// Descriptors of the process apart from its nodes (standard streams, the
/// main runtime, the report file), with room to spare.
const BASE: u64 = 64;

/// Raises the soft limit on open files to the hard limit, then checks that
/// `nodes` nodes fit under it: a simulation that runs out of descriptors
/// fails only when its last nodes open their databases, minutes in.
pub fn ensure_open_files(nodes: usize) -> Result<(), SimError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` and `setrlimit` only read and write the struct
    // passed, which lives across the calls.
    let allowed = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(SimError::FileLimit(std::io::Error::last_os_error()));
        }
        let hard = limit.rlim_max;
        if limit.rlim_cur < hard {
            limit.rlim_cur = hard;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(SimError::FileLimit(std::io::Error::last_os_error()));
            }
        }
        hard
    };
    let needed = needed(nodes);
    if allowed < needed {
        return Err(SimError::Invalid(format!(
            "{nodes} nodes need at least {needed} open files ({PER_NODE} a node); \
             the hard limit is {allowed} (raise it with `ulimit -Hn` as root, or run fewer nodes)"
        )));
    }
    Ok(())
}

/// The open files `nodes` nodes need at least.
fn needed(nodes: usize) -> u64 {
    (nodes as u64).saturating_mul(PER_NODE).saturating_add(BASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_nodes_fit_a_limit_of_twenty_thousand_and_ten_thousand_do_not() {
        assert!(needed(1_000) <= 20_000);
        assert!(needed(10_000) > 20_000);
        assert_eq!(needed(usize::MAX), u64::MAX, "no overflow");
    }

    #[test]
    fn this_process_can_hold_a_few_nodes_and_not_a_billion() {
        ensure_open_files(2).expect("two nodes fit any usable limit");
        let refused = ensure_open_files(1 << 40).expect_err("no limit is that high");
        assert!(refused.to_string().contains("open files"), "{refused}");
    }
}
