//! Simulated time. Every node of a simulation shares this machine's cores,
//! so at large N a node waits for the CPU far longer than a node with a
//! machine of its own would, and misses deadlines (Raft heartbeats, lease
//! renewals) that only the simulation makes hard. A [`Dilation`] slows every
//! timer of every node down by the same factor — leases, Raft's heartbeats
//! and elections, pings, idle and refresh periods, request timeouts — so a
//! node gets that many times more CPU per simulated second, as with time
//! dilation in network emulation (Gupta et al., "To Infinity and Beyond:
//! Time-Warped Network Emulation", NSDI 2006). Every figure is reported in
//! simulated time: a duration measured on the real clock is divided by the
//! factor, a rate per real second multiplied by it.
//!
//! What stays real: the work itself. The protocol keeps all its ratios
//! (every membership period is a fixed fraction of the lease), nothing is
//! modelled, and CPU per simulated second is what a node would spend per
//! second on a machine of its own.

use std::time::{Duration, Instant};

use crate::SimError;

/// The largest factor accepted: beyond it, a simulated second of protocol
/// timers would be minutes of wall-clock time.
pub const MAX_SCALE: u32 = 100;

/// How many times slower than real time every node's timers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dilation(u32);

impl Default for Dilation {
    fn default() -> Self {
        Self(1)
    }
}

impl Dilation {
    /// Timers `scale` times slower than real time (1: real time).
    pub fn new(scale: u32) -> Result<Self, SimError> {
        if (1..=MAX_SCALE).contains(&scale) {
            Ok(Self(scale))
        } else {
            Err(SimError::Invalid(format!(
                "--time-scale must be from 1 to {MAX_SCALE}, not {scale}"
            )))
        }
    }

    /// The factor.
    pub fn scale(self) -> u32 {
        self.0
    }

    /// The real duration that stands for `simulated` time: what a node's
    /// timer or a deadline of the simulation is set to.
    pub fn real(self, simulated: Duration) -> Duration {
        simulated.saturating_mul(self.0)
    }

    /// The simulated duration a real one stands for.
    pub fn simulated(self, real: Duration) -> Duration {
        real / self.0
    }

    /// A stopwatch that reads simulated time, started now.
    pub fn stopwatch(self) -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
            dilation: self,
        }
    }
}

/// Simulated time since it was started.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: Instant,
    dilation: Dilation,
}

impl Stopwatch {
    /// Simulated time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.dilation.simulated(self.started.elapsed())
    }

    /// Simulated seconds elapsed.
    pub fn secs(&self) -> f64 {
        self.elapsed().as_secs_f64()
    }

    /// Simulated milliseconds elapsed.
    pub fn ms(&self) -> f64 {
        self.secs() * 1e3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_factor_outside_its_range_is_refused_and_one_inside_converts_both_ways() {
        assert!(Dilation::new(0).is_err());
        assert!(Dilation::new(MAX_SCALE + 1).is_err());
        let d = Dilation::new(4).expect("4 is in range");
        assert_eq!(
            d.real(Duration::from_millis(150)),
            Duration::from_millis(600)
        );
        assert_eq!(
            d.simulated(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            Dilation::default().real(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
