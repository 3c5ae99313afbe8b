//! One function per `p3ctl` command.

mod network;

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{
    args::{Cli, Command, NodeCommand},
    config::DataDir,
};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Node {
                command:
                    NodeCommand::Start {
                        listen,
                        bootstrap,
                        opts,
                    },
            } => {
                init_logging();
                crate::daemon::run(DataDir::resolve(opts.data_dir)?, &listen, &bootstrap).await?
            }
            Command::Node {
                command: NodeCommand::Id { opts },
            } => network::id(&opts)?,
            Command::Node {
                command: NodeCommand::Status { opts },
            } => network::status(&opts).await?,
            Command::Peers { opts } => network::peers(&opts).await?,
            Command::Closest {
                key,
                hex,
                count,
                opts,
            } => network::closest(&opts, &key, hex, count).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Logs go to stderr; `RUST_LOG` (e.g. `p3_dht=debug`) adjusts them, default `info`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
