//! # p3-cli — `p3ctl`, the node daemon and its client commands
//!
//! `p3ctl node start` runs a node in the foreground: it loads the node's identity,
//! database and configuration from its data directory ([`config`]), starts the
//! network ([`p3_dht::Node`]) and serves the local API ([`p3_objectspace::api`])
//! that every other command uses to talk to it, through
//! [`p3_objectspace::api::Space`].
//!
//! What it must never do: reach into a layer's internals (it only uses the public
//! APIs of the crates below it), serve its API beyond the loopback interface or
//! without the data directory's token, or print more than one line for an error.

pub mod config;

mod args;
mod commands;
mod daemon;
mod output;
mod parse;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// `p3ctl` with the built-in job kinds.
pub fn main() -> ExitCode {
    main_with(&p3_scheduler::jobs::builtin())
}

/// `p3ctl` whose nodes and `job` commands know the job kinds of `registry`:
/// the `main` of a node binary with job kinds of its own (see the README).
/// Parses the command line, runs the command, and turns an error into one line
/// on stderr and a non-zero exit status.
pub fn main_with(registry: &p3_scheduler::Registry) -> ExitCode {
    let cli = args::Cli::parse();
    if !cli.command.is_long_running() {
        // A client command whose reader went away (`p3ctl ls NS | head`) ends
        // quietly, as a Unix tool does, instead of failing on the write. The
        // node and the mount keep ignoring SIGPIPE: they must outlive peers.
        // SAFETY: restoring a default signal disposition at start-up, before
        // any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match commands::run(cli, registry) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("p3ctl: {}", output::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
