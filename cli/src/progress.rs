//! Progress bars for `put` and `get` transfers, on stderr.
//!
//! A bar appears only when a person is watching (stderr is a terminal) and the
//! transfer is long enough to be worth one: at least [`THRESHOLD`] bytes, known up
//! front or once that many have moved. Small transfers and scripts never see it,
//! and it is cleared when the transfer ends so the result (or the one-line error)
//! is all that remains.

use std::{io::IsTerminal, time::Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Transfers smaller than this get no bar.
pub const THRESHOLD: u64 = 8 << 20;

/// The progress of one transfer; feed it with [`Progress::update`].
pub struct Progress {
    label: &'static str,
    enabled: bool,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A transfer called `label` (`put`, `get`) of `total` bytes if known.
    pub fn new(label: &'static str, total: Option<u64>) -> Self {
        let mut progress = Self::with_terminal(label, std::io::stderr().is_terminal());
        progress.update(0, total);
        progress
    }

    fn with_terminal(label: &'static str, enabled: bool) -> Self {
        Self {
            label,
            enabled,
            started: Instant::now(),
            bar: None,
        }
    }

    /// `done` bytes have moved so far; `total` is the size if it is known (a get
    /// learns it only from the first answer).
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        if self.bar.is_none() && self.wants_bar(done, total) {
            self.bar = Some(self.make_bar(done, total));
        }
        if let Some(bar) = &self.bar {
            if let Some(total) = total {
                if bar.length() != Some(total) {
                    bar.set_length(total);
                }
            }
            bar.set_position(done);
        }
    }

    fn wants_bar(&self, done: u64, total: Option<u64>) -> bool {
        self.enabled && (done >= THRESHOLD || total.is_some_and(|t| t >= THRESHOLD))
    }

    fn make_bar(&self, done: u64, total: Option<u64>) -> ProgressBar {
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ),
            None => (
                ProgressBar::no_length(),
                "{prefix} {spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(self.label);
        // The bar may start late, with bytes already moved (a stream of unknown
        // size): the elapsed time is backdated, but the rate is measured only
        // from here on, or the jump from 0 would read as an absurd speed.
        let bar = bar.with_elapsed(self.started.elapsed());
        bar.set_position(done);
        bar.reset_eta();
        bar
    }

    /// Whether a bar is on screen.
    #[cfg(test)]
    fn is_shown(&self) -> bool {
        self.bar.is_some()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bar_without_a_terminal() {
        let mut p = Progress::with_terminal("put", false);
        p.update(0, Some(1 << 30));
        p.update(1 << 30, None);
        assert!(!p.is_shown());
    }

    #[test]
    fn bar_only_for_large_transfers() {
        let mut small = Progress::with_terminal("get", true);
        small.update(1 << 20, Some(1 << 20));
        assert!(!small.is_shown());

        let mut known = Progress::with_terminal("get", true);
        known.update(0, Some(THRESHOLD));
        assert!(known.is_shown());

        let mut stream = Progress::with_terminal("put", true);
        stream.update(THRESHOLD - 1, None);
        assert!(!stream.is_shown());
        stream.update(THRESHOLD, None);
        assert!(stream.is_shown());
    }
}
