//! Commands about namespaces: `ns create`, `ns rm`, `ns ls`.

use anyhow::Result;
use p3_objectspace::Namespace;

use super::space;
use crate::{args::NodeOpts, output};

/// `p3ctl ns create NAME`.
pub async fn create(opts: &NodeOpts, name: &str) -> Result<()> {
    Namespace::new(name)?;
    space(opts).await?.create_namespace(name).await?;
    done(opts, name, "created")
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
