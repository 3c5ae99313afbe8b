//! Commands about objects: `put`, `get`, `stat`, `rm`, `ls`.

use std::{
    io::IsTerminal,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use p3_objectspace::{
    api::protocol::{Wait, Written},
    api::Space,
    object::{MetaValue, PutOptions, Stat},
    Namespace, ObjectPath,
};

use super::space;
use crate::{args::NodeOpts, output, progress::Progress};

/// The write options of `put`, from its flags.
pub fn put_options(
    type_tag: String,
    meta: Vec<(String, MetaValue)>,
    ttl: Option<Duration>,
    if_version: Option<u64>,
    token: Option<u64>,
) -> PutOptions {
    PutOptions {
        type_tag,
        meta: meta.into_iter().collect(),
        // A TTL beyond u64 milliseconds is forever for any practical purpose.
        ttl_ms: ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        if_version,
        token,
        volatile: false,
    }
}

/// Checks `NS/NAME` here so a typo fails before stdin is read or a node is asked.
fn check_path(path: &str) -> Result<()> {
    ObjectPath::parse(path)?;
    Ok(())
}

/// `p3ctl put NS/NAME [FILE|-]`.
pub async fn put(
    opts: &NodeOpts,
    path: &str,
    file: Option<&Path>,
    options: PutOptions,
) -> Result<()> {
    check_path(path)?;
    let mut space = space(opts).await?;
    let (value, size) = match file.filter(|f| *f != Path::new("-")) {
        Some(file) => {
            let value = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let meta = value
                .metadata()
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            if meta.is_dir() {
                anyhow::bail!("cannot open {}: it is a directory", file.display());
            }
            // Only a regular file's length is its value's size (not a pipe's).
            let size = meta.is_file().then_some(meta.len());
            (value, size)
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "p3ctl: reading the value of {path} from the terminal; end it with Ctrl-D"
                );
            }
            (
                std_file(std::io::stdin().as_fd()).context("cannot read stdin")?,
                None,
            )
        }
    };
    let mut progress = Progress::new("put", size);
    let written = space
        .put(path, &options, size, value, |sent| {
            progress.update(sent, size)
        })
        .await?;
    drop(progress);
    if opts.json {
        return output::json(&written);
    }
    println!(
        "{} version {} blake3 {} ({} bytes)",
        written.path, written.version, written.hash, written.size
    );
    Ok(())
}

/// An async file on a copy of stdin's or stdout's descriptor: the workspace's
/// tokio is built without `io-std`, and this is all that feature would do.
fn std_file(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<tokio::fs::File> {
    let owned = fd.try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

/// How `get` and `take` obtain a value.
pub enum Read {
    /// `p3ctl get`, optionally waiting for the object (or a newer version).
    Get(Option<Wait>),
    /// `p3ctl take`, optionally waiting for the object.
    Take(Option<Duration>),
    /// `p3ctl take NS --match QUERY`, optionally waiting for a match.
    TakeMatch(String, Option<Duration>),
}

impl Read {
    async fn fetch(
        &self,
        space: &mut Space,
        path: &str,
        out: impl tokio::io::AsyncWrite + Unpin,
        progress: &mut Progress,
    ) -> Result<Stat> {
        let progress = |stat: &Stat, got| progress.update(got, Some(stat.size));
        let stat = match self {
            Read::Get(wait) => space.get_waiting(path, *wait, out, progress).await?,
            Read::Take(wait) => space.take(path, *wait, out, progress).await?,
            Read::TakeMatch(query, wait) => {
                space.take_match(path, query, *wait, out, progress).await?
            }
        };
        if let Read::Take(_) | Read::TakeMatch(..) = self {
            eprintln!("took {} (version {})", stat.path, stat.version);
        }
        Ok(stat)
    }
}

/// `p3ctl get NS/NAME [-o FILE] [--wait DURATION [--after-version N]]` and
/// `p3ctl take NS/NAME [-o FILE] [--wait DURATION]`.
pub async fn read(opts: &NodeOpts, path: &str, output: Option<&Path>, how: Read) -> Result<()> {
    match how {
        Read::TakeMatch(..) => drop(Namespace::new(path)?),
        _ => check_path(path)?,
    }
    let mut space = space(opts).await?;
    let mut progress = Progress::new("get", None);
    // Standard output, and a device, FIFO or socket, are written through:
    // a file renamed over one would replace it (as root, `-o /dev/null`
    // replaced the device).
    let Some(output) = output.filter(|o| !is_special(o)) else {
        let out = match output {
            Some(special) => tokio::fs::OpenOptions::new()
                .write(true)
                .open(special)
                .await
                .with_context(|| format!("cannot open {}", special.display()))?,
            None => std_file(std::io::stdout().as_fd()).context("cannot write stdout")?,
        };
        how.fetch(&mut space, path, out, &mut progress).await?;
        return Ok(());
    };
    let mut partial = Partial::create(output)?;
    let mut file = partial.open().await?;
    let written = async {
        how.fetch(&mut space, path, &mut file, &mut progress)
            .await?;
        file.sync_all()
            .await
            .with_context(|| format!("cannot write {}", partial.path.display()))
    };
    if let Err(e) = written.await {
        // A taken object exists nowhere else: keep whatever of it arrived.
        let arrived = std::fs::metadata(&partial.path).is_ok_and(|m| m.len() > 0);
        if arrived && !matches!(how, Read::Get(_)) {
            partial.keep = true;
            return Err(e.context(format!(
                "the object was taken but not completely saved; what arrived is in {}",
                partial.path.display()
            )));
        }
        return Err(e);
    }
    drop(progress);
    drop(file);
    partial.commit(output).await
}

/// Whether `path` exists and is neither a regular file nor a directory.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// A value being written next to its destination under a temporary name; it
/// only takes the destination's name once complete, and is removed otherwise, so
/// a failed `get -o FILE` never leaves half a value under FILE's name.
struct Partial {
    path: PathBuf,
    /// Whether the file stays when this is dropped (committed, or kept as the
    /// only copy of a taken value).
    keep: bool,
}

impl Partial {
    fn create(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .with_context(|| format!("{} is not a file name", dest.display()))?;
        let mut temp = name.to_owned();
        temp.push(format!(".partial-{:08x}", rand::random::<u32>()));
        Ok(Self {
            path: dest.with_file_name(temp),
            keep: false,
        })
    }

    async fn open(&self) -> Result<tokio::fs::File> {
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)
            .await
            .with_context(|| format!("cannot create {}", self.path.display()))
    }

    async fn commit(mut self, dest: &Path) -> Result<()> {
        tokio::fs::rename(&self.path, dest).await.with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                dest.display()
            )
        })?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `p3ctl stat NS/NAME [--local]`.
pub async fn stat(opts: &NodeOpts, path: &str, local: bool) -> Result<()> {
    check_path(path)?;
    let mut space = space(opts).await?;
    let stat = if local {
        space.stat_local(path).await?
    } else {
        space.stat(path).await?
    };
    if opts.json {
        return output::json(&stat);
    }
    print_stat(&stat);
    Ok(())
}

fn print_stat(stat: &Stat) {
    println!("path:      {}", stat.path);
    println!("version:   {}", stat.version);
    println!("size:      {} bytes", stat.size);
    println!("hash:      blake3 {}", stat.hash);
    println!("type:      {}", stat.type_tag);
    if stat.volatile {
        println!("volatile:  yes (in its owners' memory only)");
    }
    if stat.meta.is_empty() {
        println!("meta:");
    }
    for (i, (key, value)) in stat.meta.iter().enumerate() {
        let label = if i == 0 { "meta:      " } else { "           " };
        println!("{label}{key}={value}");
    }
    println!("created:   {}", output::timestamp(stat.created_ms));
    println!("modified:  {}", output::timestamp(stat.modified_ms));
    match stat.expires_ms {
        Some(ms) => println!("expires:   {}", output::timestamp(ms)),
        None => println!("expires:   never"),
    }
    if stat.replicas.is_empty() {
        println!("replicas:");
    }
    for (i, replica) in stat.replicas.iter().enumerate() {
        let label = if i == 0 { "replicas:  " } else { "           " };
        let primary = if replica.primary { "  primary" } else { "" };
        println!(
            "{label}{}  version {}{primary}",
            replica.peer, replica.version
        );
    }
}

/// `p3ctl rm NS/NAME`.
pub async fn remove(
    opts: &NodeOpts,
    path: &str,
    if_version: Option<u64>,
    token: Option<u64>,
) -> Result<()> {
    check_path(path)?;
    let written: Written = space(opts)
        .await?
        .remove_fenced(path, if_version, token)
        .await?;
    if opts.json {
        return output::json(&written);
    }
    println!("{} removed (version {})", written.path, written.version);
    Ok(())
}

/// `p3ctl search NS QUERY`: matching names, one per line (with metadata in JSON).
pub async fn search(opts: &NodeOpts, namespace: &str, query: &str) -> Result<()> {
    Namespace::new(namespace)?;
    let found = space(opts).await?.search(namespace, query).await?;
    if opts.json {
        return output::json(&found);
    }
    for entry in found {
        println!("{}", entry.summary.name);
    }
    Ok(())
}

/// `p3ctl ls NS[/PREFIX]`.
pub async fn list(opts: &NodeOpts, target: &str) -> Result<()> {
    let (namespace, prefix) = target.split_once('/').unwrap_or((target, ""));
    Namespace::new(namespace)?;
    let objects = space(opts).await?.list(namespace, prefix).await?;
    if opts.json {
        return output::json(&objects);
    }
    let strip = format!("{namespace}/");
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o.path.strip_prefix(&strip).unwrap_or(&o.path))
        .collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let size_width = objects
        .iter()
        .map(|o| o.size.to_string().len())
        .max()
        .unwrap_or(0);
    for (name, object) in names.iter().zip(&objects) {
        println!(
            "{name:<name_width$}  {:>size_width$}  v{}",
            object.size, object.version
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_options_carry_every_flag() {
        let options = put_options(
            "text/plain".into(),
            vec![("n".into(), MetaValue::Num(1.0))],
            Some(Duration::from_millis(1500)),
            Some(0),
            Some(7),
        );
        assert_eq!(options.type_tag, "text/plain");
        assert_eq!(options.meta.get("n"), Some(&MetaValue::Num(1.0)));
        assert_eq!(options.ttl_ms, Some(1500));
        assert_eq!(options.if_version, Some(0));
        assert_eq!(options.token, Some(7));
    }

    #[tokio::test]
    async fn a_partial_file_never_takes_the_destination_name_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");

        let failed = Partial::create(&dest).unwrap();
        failed.open().await.unwrap();
        assert!(failed.path.starts_with(dir.path()));
        assert!(failed.path.to_string_lossy().contains("out.bin.partial-"));
        drop(failed);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let done = Partial::create(&dest).unwrap();
        let mut file = done.open().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut file, b"v")
            .await
            .unwrap();
        file.sync_all().await.unwrap();
        drop(file);
        done.commit(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"v");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
