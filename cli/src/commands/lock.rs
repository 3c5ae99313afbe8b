//! `p3ctl lock NS/NAME [--read|--write] -- CMD`: run a command under a lock,
//! like `flock` or `etcdctl lock`.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use p3_objectspace::{
    lock::{Held, LockMode},
    ObjectPath,
};

use super::space;
use crate::args::NodeOpts;

/// Acquires the lock, runs `command` with `P3_FENCING_TOKEN` set, releases the
/// lock when it exits, and returns its exit status.
pub async fn run(
    opts: &NodeOpts,
    path: &str,
    mode: LockMode,
    lease: Duration,
    timeout: Option<Duration>,
    command: &[String],
) -> Result<ExitCode> {
    ObjectPath::parse(path)?;
    let (program, args) = command
        .split_first()
        .context("give the command to run after `--`")?;
    let held = space(opts).await?.lock(path, mode, lease, timeout).await?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("P3_FENCING_TOKEN", held.token().to_string())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    // The command runs on if the lock is lost (as under `etcdctl lock`), but
    // the user hears of it at once: writes fenced with the token will be
    // refused from then on.
    let status = tokio::select! {
        status = child.wait() => status,
        e = held.lost() => {
            eprintln!(
                "p3ctl: warning: lost the lock on {path} (token {}): {e}; stopped renewing it, {program} runs on without it",
                held.token()
            );
            child.wait().await
        }
    };
    let status = status.with_context(|| format!("cannot wait for {program}"))?;
    // Released whatever happened to the command (dropping the connection would
    // release it too, but this way a lost lock is reported).
    let was_lost = matches!(held.held(), Held::Lost(_));
    if let Err(e) = held.release().await {
        if !was_lost {
            eprintln!("p3ctl: warning: {e}");
        }
    }
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: the shell convention is 128 + signal.
        None => {
            use std::os::unix::process::ExitStatusExt;
            ExitCode::from(128u8.saturating_add(status.signal().unwrap_or(0) as u8))
        }
    })
}
