//! `p3ctl job ...`: submit jobs, follow them, cancel them, and run one in this
//! process for comparison.

use std::{io::IsTerminal, process::ExitCode};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use p3_scheduler::{
    control::{self, JobStatus},
    local,
    records::{JobId, JobRecord, JobState},
    spread::Spread,
    Args, Registry,
};
use serde_json::json;

use super::space;
use crate::{args::JobCommand, output};

/// Runs one `job` subcommand.
pub async fn run(command: JobCommand, registry: &Registry) -> Result<ExitCode> {
    match command {
        JobCommand::Run {
            kind,
            args,
            wait,
            no_spread,
            opts,
        } => {
            let args = Args::from_pairs(&args)?;
            let dir = crate::config::DataDir::resolve(opts.data_dir.clone())?;
            let spread = if no_spread {
                Spread::Whole
            } else {
                Spread::OverWorkers
            };
            let id = control::submit(dir.root(), registry, &kind, args, spread).await?;
            if !wait {
                if opts.json {
                    output::json(&json!({ "id": id }))?;
                } else {
                    println!("{id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("job {id} submitted");
            let record = wait_for(&mut space(&opts).await?, registry, &id).await?;
            finished(&record, opts.json)
        }
        JobCommand::Status { id, opts } => {
            let status =
                control::status(&mut space(&opts).await?, registry, &JobId::parse(&id)?).await?;
            if opts.json {
                output::json(&status)?;
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Ls { opts } => {
            let jobs = control::list(&mut space(&opts).await?).await?;
            if opts.json {
                output::json(&jobs)?;
            } else {
                for job in jobs {
                    println!(
                        "{}  {:<8} {:<9} {}  {}",
                        job.id,
                        job.kind,
                        job.state.word(),
                        output::timestamp(job.submitted_ms),
                        args_text(&job.args)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Result { id, wait, opts } => {
            let id = JobId::parse(&id)?;
            let mut space = space(&opts).await?;
            let record = if wait {
                wait_for(&mut space, registry, &id).await?
            } else {
                control::settle(&mut space, registry, &id).await.ok();
                control::record(&mut space, &id).await?.0
            };
            if record.state == JobState::Running {
                let progress = control::status(&mut space, registry, &id).await?.progress;
                bail!(
                    "job {id} is still running ({:.0}% done); `p3ctl job result --wait {id}` waits for it",
                    progress * 100.0
                );
            }
            finished(&record, opts.json)
        }
        JobCommand::Cancel { id, opts } => {
            let record = control::cancel(&mut space(&opts).await?, &JobId::parse(&id)?).await?;
            if record.state == JobState::Cancelled {
                eprintln!("job {id} cancelled; its namespace is removed");
            } else {
                eprintln!(
                    "job {id} had already ended ({}); its namespace is removed",
                    record.state.word()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Kinds => {
            for (kind, about) in registry.kinds() {
                println!("{kind:<8} {about}");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Local { kind, args, json } => {
            let args = Args::from_pairs(&args)?;
            let registry = registry.clone();
            let run = tokio::task::spawn_blocking(move || {
                local::run_local(&registry, &kind, &args, None)
            })
            .await??;
            if json {
                output::json(&json!({
                    "result": run.result,
                    "elapsed_ms": run.elapsed.as_secs_f64() * 1000.0,
                    "setup_ms": run.setup.as_secs_f64() * 1000.0,
                }))?;
            } else {
                println!("{}", run.result);
                eprintln!(
                    "computed in {:.3}s (setup {:.3}s), one process",
                    run.elapsed.as_secs_f64(),
                    run.setup.as_secs_f64()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits for a job, with a progress bar (fraction of credit back) when a
/// person watches.
async fn wait_for(
    space: &mut p3_objectspace::Space,
    registry: &Registry,
    id: &JobId,
) -> Result<JobRecord> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:40}] {percent:>3}% of the work done")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let record = control::wait(space, registry, id, |fraction| {
        if let Some(bar) = &bar {
            bar.set_position((fraction * 1000.0) as u64);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(record?)
}

/// Prints a finished job's result; a job that did not finish is an error.
fn finished(record: &JobRecord, as_json: bool) -> Result<ExitCode> {
    let result: serde_json::Value = match &record.result {
        Some(text) => serde_json::from_str(text)?,
        None => serde_json::Value::Null,
    };
    match &record.state {
        JobState::Done => {}
        JobState::Failed(reason) => bail!("job {} failed: {reason}", record.id),
        JobState::Cancelled => bail!("job {} was cancelled", record.id),
        JobState::Running => bail!("job {} is still running", record.id),
    }
    let elapsed = record
        .finished_ms
        .unwrap_or_default()
        .saturating_sub(record.started_ms);
    if as_json {
        output::json(&json!({ "id": record.id, "result": result, "elapsed_ms": elapsed }))?;
    } else {
        println!("{result}");
        eprintln!("job {} done in {:.3}s", record.id, elapsed as f64 / 1000.0);
    }
    Ok(ExitCode::SUCCESS)
}

fn args_text(args: &Args) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_status(status: &JobStatus) {
    let job = &status.job;
    println!(
        "job:       {} ({} {})",
        job.id,
        job.kind,
        args_text(&job.args)
    );
    match &job.state {
        JobState::Failed(reason) => println!("state:     failed: {reason}"),
        state => println!("state:     {}", state.word()),
    }
    println!("progress:  {:.1}%", status.progress * 100.0);
    println!("elapsed:   {:.3}s", status.elapsed_ms as f64 / 1000.0);
    println!("tasks:     {} not finished", status.tasks);
    println!(
        "steals:    {}   divides: {}   restarts from checkpoint: {}",
        status.steals, status.divides, status.restarts
    );
    if let Some(result) = &job.result {
        println!("result:    {result}");
    }
    if status.workers.is_empty() {
        return;
    }
    println!("workers:");
    println!(
        "  {:<52} {:>6} {:>7} {:>6} {:>6} {:>7} {:>8}",
        "WORKER", "SHARE", "SLICES", "TASKS", "STEALS", "DIVIDES", "RESTARTS"
    );
    for w in &status.workers {
        let s = &w.heartbeat.stats;
        println!(
            "  {:<52} {:>5.1}% {:>7} {:>6} {:>6} {:>7} {:>8}",
            w.heartbeat.worker,
            w.share * 100.0,
            s.slices,
            s.finished,
            s.steals,
            s.divides,
            s.restarts
        );
    }
}
