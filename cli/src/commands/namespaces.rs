//! Commands about namespaces: `ns create`, `ns rm`, `ns ls`.

use anyhow::Result;
use p3_objectspace::Namespace;

use super::space;
use crate::{args::NodeOpts, output};

/// `p3ctl ns create NAME [--writer ID... [--private]]`.
pub async fn create(opts: &NodeOpts, name: &str, writers: &[String], private: bool) -> Result<()> {
    Namespace::new(name)?;
    let mut space = space(opts).await?;
    if writers.is_empty() {
        space.create_namespace(name).await?;
    } else {
        space.create_writer_only(name, writers, private).await?;
    }
    done(opts, name, "created")
}

/// `p3ctl ns grant|revoke NAME ID...`.
pub async fn change_writers(
    opts: &NodeOpts,
    name: &str,
    grant: &[String],
    revoke: &[String],
) -> Result<()> {
    Namespace::new(name)?;
    let now = space(opts)
        .await?
        .change_writers(name, grant, revoke)
        .await?;
    print_writers(opts, &now)
}

/// `p3ctl ns writers NAME`.
pub async fn writers(opts: &NodeOpts, name: &str) -> Result<()> {
    Namespace::new(name)?;
    let now = space(opts).await?.writers(name).await?;
    print_writers(opts, &now)
}

fn print_writers(opts: &NodeOpts, writers: &[String]) -> Result<()> {
    if opts.json {
        return output::json(&writers);
    }
    if writers.is_empty() {
        println!("open (every node may change it)");
    }
    for writer in writers {
        println!("{writer}");
    }
    Ok(())
}

/// `p3ctl ns rm NAME`: removes the namespace and every object in it.
pub async fn remove(opts: &NodeOpts, name: &str) -> Result<()> {
    Namespace::new(name)?;
    space(opts).await?.remove_namespace(name).await?;
    done(opts, name, "removed")
}

/// `p3ctl ns ls`.
pub async fn list(opts: &NodeOpts) -> Result<()> {
    let namespaces = space(opts).await?.namespaces().await?;
    if opts.json {
        return output::json(&namespaces);
    }
    for name in namespaces {
        println!("{name}");
    }
    Ok(())
}

fn done(opts: &NodeOpts, name: &str, what: &str) -> Result<()> {
    if opts.json {
        return output::json(&serde_json::json!({ "namespace": name, what: true }));
    }
    println!("namespace {name} {what}");
    Ok(())
}
