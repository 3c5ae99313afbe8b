//! `p3ctl mount` and `p3ctl umount`.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use p3_mount::MountConfig;
use tokio::signal::unix;

use crate::{args::NodeOpts, config::DataDir};

/// Mounts and serves until SIGINT/SIGTERM (then unmounts) or until unmounted
/// from outside.
pub async fn run(opts: &NodeOpts, namespace: &str, dir: &Path, read_only: bool) -> Result<()> {
    super::init_logging();
    let config = MountConfig {
        namespace: namespace.to_owned(),
        data_dir: DataDir::resolve(opts.data_dir.clone())?.root().to_owned(),
        mountpoint: dir
            .canonicalize()
            .with_context(|| format!("cannot mount on {}", dir.display()))?,
        read_only,
    };
    let mut sigterm = unix::signal(unix::SignalKind::terminate())?;
    let mut sigint = unix::signal(unix::SignalKind::interrupt())?;
    let runtime = tokio::runtime::Handle::current();
    let mounted = tokio::task::spawn_blocking({
        let config = config.clone();
        move || p3_mount::mount(runtime, &config)
    })
    .await??;
    tracing::info!(namespace, dir = %config.mountpoint.display(), read_only, "mounted");
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if mounted.is_unmounted() {
                    tracing::info!("unmounted from outside");
                    return Ok(());
                }
            }
        }
    }
    // Unmount explicitly: with auto_unmount (as root) dropping the session only
    // hands the job to fusermount's helper, which does not always do it.
    if let Err(e) = unmount(&config.mountpoint).await {
        tracing::warn!(error = %e, "unmount failed (busy?); detaching it lazily");
        let _ = tokio::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&config.mountpoint)
            .status()
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !mounted.is_unmounted() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(move || drop(mounted)).await?;
    tracing::info!("unmounted");
    Ok(())
}

/// Asks fusermount to unmount `dir`.
pub async fn unmount(dir: &Path) -> Result<()> {
    for program in ["fusermount3", "fusermount"] {
        let status = tokio::process::Command::new(program)
            .arg("-u")
            .arg(dir)
            .status()
            .await;
        match status {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => bail!("{program} -u {} failed ({s})", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).context(format!("cannot run {program}")),
        }
    }
    bail!("neither fusermount3 nor fusermount is installed (install fuse3)")
}
