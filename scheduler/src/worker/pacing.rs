//! When a worker does what every worker of a job would otherwise do at the
//! same moment (report, checkpoint, announce itself), and whom it asks for
//! work: each a pure function of a draw `u` in [0, 1) that the caller takes
//! (`rand::random`), so the spacing and the choice are tested with chosen
//! draws instead of trusted to chance.

use std::time::Duration;

/// `u` kept inside [0, 1]: a draw out of range must not stretch a pause.
fn unit(u: f64) -> f64 {
    if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The pause before a worker's first report of a part it just started: up
/// to `spread`, so the workers of a job spread at submission, which start
/// their parts together, do not all report in one burst.
pub(super) fn first_report(spread: Duration, u: f64) -> Duration {
    spread.mul_f64(unit(u))
}

/// One heartbeat interval: `base` a quarter longer or shorter, so workers
/// that started together drift apart. Its mean over uniform draws is
/// `base`, which liveness (`Jobs::fresh_ms`) counts on.
pub(super) fn heartbeat(base: Duration, u: f64) -> Duration {
    base.mul_f64(0.75 + unit(u) / 2.0)
}

/// How far into its first checkpoint interval a task starts: a half to a
/// whole interval then passes before its first checkpoint (a durable
/// write), so tasks that start together do not checkpoint together.
pub(super) fn checkpoint_phase(every: Duration, u: f64) -> Duration {
    every.mul_f64(unit(u) / 2.0)
}

/// The pause before retrying a failed announcement: a half to all of
/// `retry`, so the workers that collided on the registry do not again.
pub(super) fn retry(retry: Duration, u: f64) -> Duration {
    retry.mul_f64(0.5 + unit(u) / 2.0)
}

/// The item whose share of the total weight holds `u`: each is chosen with
/// probability weight / total over uniform draws. None if there is nothing
/// with a positive, finite weight.
pub(super) fn weighted<T>(items: &[(T, f64)], u: f64) -> Option<&T> {
    let usable = |w: f64| w.is_finite() && w > 0.0;
    let total: f64 = items.iter().map(|(_, w)| *w).filter(|w| usable(*w)).sum();
    if !usable(total) {
        return None;
    }
    let mut left = unit(u) * total;
    let mut last = None;
    for (item, weight) in items.iter().filter(|(_, w)| usable(*w)) {
        last = Some(item);
        left -= weight;
        if left < 0.0 {
            return Some(item);
        }
    }
    // u = 1 (or rounding): the last usable item.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn spacings_span_their_ranges_and_no_further() {
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(first_report(SECOND, 0.0)), 0);
        assert_eq!(ms(first_report(SECOND, 0.5)), 500);
        assert_eq!(ms(heartbeat(SECOND, 0.0)), 750);
        assert_eq!(ms(heartbeat(SECOND, 1.0)), 1250);
        assert_eq!(ms(checkpoint_phase(SECOND, 0.0)), 0);
        assert_eq!(ms(checkpoint_phase(SECOND, 1.0)), 500);
        assert_eq!(ms(retry(SECOND, 0.0)), 500);
        assert_eq!(ms(retry(SECOND, 1.0)), 1000);
        // Out-of-range draws stay inside the range.
        for u in [-1.0, 7.0, f64::NAN, f64::INFINITY] {
            assert!(first_report(SECOND, u) <= SECOND);
            assert!((750..=1250).contains(&ms(heartbeat(SECOND, u))));
            assert!(checkpoint_phase(SECOND, u) <= SECOND / 2);
            assert!((500..=1000).contains(&ms(retry(SECOND, u))));
        }
    }

    #[test]
    fn heartbeats_average_the_configured_interval() {
        // Evenly spaced draws stand in for uniform ones.
        let n = 1000;
        let total: Duration = (0..n)
            .map(|i| heartbeat(SECOND, (i as f64 + 0.5) / n as f64))
            .sum();
        let mean = total / n;
        assert!(
            mean.abs_diff(SECOND) < Duration::from_millis(1),
            "mean {mean:?}"
        );
    }

    #[test]
    fn a_victim_is_chosen_in_proportion_to_its_weight() {
        let victims = [("idle", 0.0), ("a", 1.0), ("b", 3.0)];
        assert_eq!(weighted(&victims, 0.0), Some(&"a"));
        assert_eq!(weighted(&victims, 0.24), Some(&"a"));
        assert_eq!(weighted(&victims, 0.26), Some(&"b"));
        assert_eq!(weighted(&victims, 1.0), Some(&"b"));
        let n = 4000;
        let a = (0..n)
            .filter(|i| weighted(&victims, (*i as f64 + 0.5) / n as f64) == Some(&"a"))
            .count();
        assert_eq!(a, n / 4, "a holds a quarter of the weight");
    }

    #[test]
    fn nothing_is_chosen_without_a_usable_weight() {
        assert_eq!(weighted::<&str>(&[], 0.5), None);
        assert_eq!(weighted(&[("idle", 0.0)], 0.5), None);
        assert_eq!(
            weighted(&[("bad", f64::NAN), ("ok", 2.0)], 0.9),
            Some(&"ok")
        );
        assert_eq!(weighted(&[("huge", f64::INFINITY)], 0.5), None);
    }
}
