//! `p3ctl watch NS[/PREFIX]`: changes as they happen, one line each.

use std::io::Write;

use anyhow::{Context, Result};
use p3_objectspace::{watch::EventKind, Namespace};

use super::space;
use crate::{args::NodeOpts, output};

/// Prints every event until interrupted (or the node goes away).
pub async fn run(opts: &NodeOpts, target: &str, exact: bool) -> Result<()> {
    let (namespace, prefix) = target.split_once('/').unwrap_or((target, ""));
    Namespace::new(namespace)?;
    let mut events = space(opts).await?.watch(namespace, prefix, exact).await?;
    // On stderr, so scripts reading stdout see only events. From here on every
    // change is delivered; other nodes learn of the subscription within moments.
    eprintln!("watching {namespace}/{prefix}");
    let mut stdout = std::io::stdout().lock();
    loop {
        let event = events.next().await?;
        let line = if opts.json {
            serde_json::to_string(&event)?
        } else {
            let kind = match event.kind {
                EventKind::Put => "put",
                EventKind::Remove => "rm",
                EventKind::Expire => "expire",
            };
            format!(
                "{} {kind} {}/{} v{} {} {}",
                output::timestamp(event.at_ms),
                event.namespace,
                event.name,
                event.version,
                event.size,
                event.hash
            )
        };
        // Flushed per line: a pipe would otherwise hold events back.
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .context("cannot write stdout")?;
    }
}
