//! How results and errors are printed.

use std::fmt::Write as _;

use serde::Serialize;

/// An error chain on one line: `outer: inner: root cause`.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for (i, cause) in error.chain().enumerate() {
        let text = cause.to_string();
        // Contexts often repeat their cause; print each piece once.
        if line.contains(&text) {
            continue;
        }
        if i > 0 {
            line.push_str(": ");
        }
        let _ = write!(line, "{}", text.replace('\n', " "));
    }
    line
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `3h 2m 1s`-style durations for people.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_is_one_line_without_repeats() {
        let root = anyhow::anyhow!("connection refused\n(os error 111)");
        let e = root.context("cannot reach the node");
        assert_eq!(
            one_line(&e),
            "cannot reach the node: connection refused (os error 111)"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(3725), "1h 2m 5s");
    }
}
