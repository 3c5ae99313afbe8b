//! Failure detection: a connection whose peer has answered no ping for the
//! failure timeout is closed, whatever TCP says. libp2p's ping alone keeps a
//! paused peer for 10–20 s: its first failure is silent and a new ping stream
//! waits out a 10 s negotiation timeout. Pure bookkeeping; the event loop
//! feeds it and closes what it names.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// When each open connection last showed its peer alive.
#[derive(Debug)]
pub(crate) struct Silence<C> {
    timeout: Duration,
    heard: HashMap<C, Instant>,
}

impl<C: Copy + Eq + Hash> Silence<C> {
    /// Connections silent for `timeout` are named by [`Silence::silent`].
    pub(crate) fn new(timeout: Duration) -> Self {
        Silence {
            timeout,
            heard: HashMap::new(),
        }
    }

    /// `connection` was opened at `now` (which counts as hearing from it).
    pub(crate) fn opened(&mut self, connection: C, now: Instant) {
        self.heard.insert(connection, now);
    }

    /// A ping over `connection` was answered at `now`.
    pub(crate) fn heard(&mut self, connection: C, now: Instant) {
        if let Some(last) = self.heard.get_mut(&connection) {
            *last = (*last).max(now);
        }
    }

    /// `connection` is closed.
    pub(crate) fn closed(&mut self, connection: C) {
        self.heard.remove(&connection);
    }

    /// The connections silent for longer than the timeout at `now`; they are
    /// forgotten, so each is named once.
    pub(crate) fn silent(&mut self, now: Instant) -> Vec<C> {
        let timeout = self.timeout;
        let silent: Vec<C> = self
            .heard
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(**last) > timeout)
            .map(|(c, _)| *c)
            .collect();
        for c in &silent {
            self.heard.remove(c);
        }
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_silent_for_the_whole_timeout_are_named_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut silence = Silence::new(ms(3000));
        silence.opened(1, t0);
        silence.opened(2, t0);
        silence.heard(2, t0 + ms(2000));
        silence.heard(3, t0 + ms(2000)); // never opened: ignored
        assert!(silence.silent(t0 + ms(3000)).is_empty());
        assert_eq!(silence.silent(t0 + ms(3001)), vec![1]);
        assert!(silence.silent(t0 + ms(4000)).is_empty(), "named once");
        assert_eq!(silence.silent(t0 + ms(5001)), vec![2]);
        silence.opened(4, t0);
        silence.closed(4);
        assert!(silence.silent(t0 + ms(60_000)).is_empty());
    }
}
