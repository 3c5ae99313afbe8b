//! One function per `p3ctl` command.

mod bench;
mod jobs;
mod lock;
mod mount;
mod namespaces;
mod network;
mod objects;
mod watch;

use std::process::ExitCode;

use anyhow::{Context, Result};
use p3_objectspace::{
    api::{protocol::Wait, Space},
    lock::LockMode,
};
use p3_scheduler::Registry;

use self::objects::Read;

use crate::{
    args::{Cli, Command, LogFormat, NodeCommand, NodeOpts, NsCommand, SwarmKeyCommand},
    config::DataDir,
    daemon::NodeArgs,
};

/// Stack of the runtime's threads. A node's deepest tasks (a worker's slot
/// claiming, stealing and checkpointing a task through the engine) build
/// large futures on the stack where they await one another: they overflow
/// 1 MiB and came within a few frames of the 2 MiB default (a CI run saw
/// three nodes overflow it). Untouched stack costs address space, not memory.
const THREAD_STACK: usize = 8 << 20;

/// tokio sizes the runtime from `TOKIO_WORKER_THREADS` and panics on a value
/// it cannot use: refuse such a value first, in one line.
fn check_worker_threads() -> Result<()> {
    let Some(value) = std::env::var_os("TOKIO_WORKER_THREADS") else {
        return Ok(());
    };
    let threads = value.to_str().and_then(|v| v.parse::<usize>().ok());
    if threads.is_none_or(|n| n == 0) {
        anyhow::bail!(
            "TOKIO_WORKER_THREADS={value:?}: expected a number of threads (1 or more); unset it for one per core"
        );
    }
    Ok(())
}

/// Runs the parsed command line; `registry` holds the job kinds this binary runs.
pub fn run(cli: Cli, registry: &Registry) -> Result<ExitCode> {
    check_worker_threads()?;
    // A node and a mount log by default; any other command only when asked
    // (`RUST_LOG=p3_scheduler=debug p3ctl job run ...`), to keep its
    // output its answer.
    let serves = matches!(
        cli.command,
        Command::Node {
            command: NodeCommand::Start { .. }
        } | Command::Mount { .. }
    );
    if !serves && std::env::var_os("RUST_LOG").is_some() {
        init_logging();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Node {
                command:
                    NodeCommand::Start {
                        listen,
                        bootstrap,
                        slots,
                        no_worker,
                        http_listen,
                        log_format,
                        opts,
                    },
            } => {
                init_logging_as(log_format);
                let args = NodeArgs {
                    listen,
                    bootstrap,
                    slots: (!no_worker).then_some(usize::from(slots)),
                    http_listen,
                };
                crate::daemon::run(DataDir::resolve(opts.data_dir)?, args, registry.clone()).await?
            }
            Command::Node {
                command: NodeCommand::Id { opts },
            } => network::id(&opts)?,
            Command::Node {
                command: NodeCommand::Status { opts },
            } => network::status(&opts).await?,
            Command::Node {
                command: NodeCommand::Dashboard { opts },
            } => network::dashboard(&opts)?,
            Command::Peers { opts } => network::peers(&opts).await?,
            Command::Closest {
                key,
                hex,
                count,
                opts,
            } => network::closest(&opts, &key, hex, count).await?,
            Command::Put {
                path,
                file,
                type_tag,
                meta,
                ttl,
                if_version,
                token,
                volatile,
                opts,
            } => {
                let mut options = objects::put_options(type_tag, meta, ttl, if_version, token);
                options.volatile = volatile;
                objects::put(&opts, &path, file.as_deref(), options).await?
            }
            Command::Get {
                path,
                output,
                wait,
                after_version,
                opts,
            } => {
                let wait = wait.map(|w| Wait {
                    ms: w.as_millis().try_into().unwrap_or(u64::MAX),
                    after_version,
                });
                objects::read(&opts, &path, output.as_deref(), Read::Get(wait)).await?
            }
            Command::Watch {
                target,
                exact,
                opts,
            } => watch::run(&opts, &target, exact).await?,
            Command::Lock {
                path,
                read,
                write: _,
                lease,
                timeout,
                opts,
                command,
            } => {
                let mode = if read {
                    LockMode::Read
                } else {
                    LockMode::Write
                };
                return lock::run(&opts, &path, mode, lease, timeout, &command).await;
            }
            Command::Take {
                target,
                query,
                wait,
                output,
                opts,
            } => {
                let how = match query {
                    Some(query) => Read::TakeMatch(query, wait),
                    None => Read::Take(wait),
                };
                objects::read(&opts, &target, output.as_deref(), how).await?
            }
            Command::Search {
                namespace,
                query,
                opts,
            } => objects::search(&opts, &namespace, &query).await?,
            Command::Stat { path, local, opts } => objects::stat(&opts, &path, local).await?,
            Command::Rm {
                path,
                if_version,
                token,
                opts,
            } => objects::remove(&opts, &path, if_version, token).await?,
            Command::Ls { target, opts } => objects::list(&opts, &target).await?,
            Command::Ns {
                command:
                    NsCommand::Create {
                        name,
                        writers,
                        private,
                        opts,
                    },
            } => namespaces::create(&opts, &name, &writers, private).await?,
            Command::Ns {
                command:
                    NsCommand::Grant {
                        name,
                        writers,
                        opts,
                    },
            } => namespaces::change_writers(&opts, &name, &writers, &[]).await?,
            Command::Ns {
                command:
                    NsCommand::Revoke {
                        name,
                        writers,
                        opts,
                    },
            } => namespaces::change_writers(&opts, &name, &[], &writers).await?,
            Command::Ns {
                command: NsCommand::Writers { name, opts },
            } => namespaces::writers(&opts, &name).await?,
            Command::Ns {
                command: NsCommand::Rm { name, opts },
            } => namespaces::remove(&opts, &name).await?,
            Command::Ns {
                command: NsCommand::Ls { opts },
            } => namespaces::list(&opts).await?,
            Command::Bench { bench, opts } => bench::run(&opts, &bench).await?,
            Command::Job { command } => return jobs::run(command, registry).await,
            Command::Mount {
                namespace,
                dir,
                read_only,
                opts,
            } => mount::run(&opts, &namespace, &dir, read_only).await?,
            Command::Umount { dir } => mount::unmount(&dir).await?,
            Command::SwarmKey {
                command: SwarmKeyCommand::New,
            } => print!("{}", p3_dht::SwarmKey::generate().to_file_text()),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A connection to the node of the command's data directory.
async fn space(opts: &NodeOpts) -> Result<Space> {
    let dir = DataDir::resolve(opts.data_dir.clone())?;
    Ok(Space::connect(dir.root()).await?)
}

/// Logs go to stderr; `RUST_LOG` (e.g. `p3_dht=debug`) adjusts them, default `info`.
pub(crate) fn init_logging() {
    init_logging_as(LogFormat::Text);
}

/// [`init_logging`] in the given format.
pub(crate) fn init_logging_as(format: LogFormat) {
    // openraft reports every unreachable peer as an error, twice a second,
    // until the member is removed; the membership layer says what matters.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}
