//! The dashboard: its page, style sheet and ES modules, embedded in the
//! binary at build time (no CDN, no build step); the page reads everything
//! else from the API with the token the user gives it.

use axum::{http::header, response::IntoResponse, routing::get, Router};

use crate::HttpState;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// What browsers require of a module script (they refuse one served as
/// anything else).
const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads: the path it is served at, its content type and
/// its contents. `app.js` is the entry module; the others are what it imports
/// (`./x.js` from `/app.js` is `/x.js`).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../assets/index.html")),
    ("/style.css", CSS, include_str!("../assets/style.css")),
    ("/app.js", JS, include_str!("../assets/app.js")),
    ("/api.js", JS, include_str!("../assets/api.js")),
    ("/banner.js", JS, include_str!("../assets/banner.js")),
    ("/charts.js", JS, include_str!("../assets/charts.js")),
    ("/cluster.js", JS, include_str!("../assets/cluster.js")),
    ("/dom.js", JS, include_str!("../assets/dom.js")),
    ("/format.js", JS, include_str!("../assets/format.js")),
    ("/jobs.js", JS, include_str!("../assets/jobs.js")),
    ("/metrics.js", JS, include_str!("../assets/metrics.js")),
    (
        "/node-status.js",
        JS,
        include_str!("../assets/node-status.js"),
    ),
    ("/objects.js", JS, include_str!("../assets/objects.js")),
    ("/poll.js", JS, include_str!("../assets/poll.js")),
    ("/prom.js", JS, include_str!("../assets/prom.js")),
    ("/token.js", JS, include_str!("../assets/token.js")),
];

/// A route for each of `ASSETS`.
pub fn routes() -> Router<std::sync::Arc<HttpState>> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { page(content_type, body) }))
        })
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths each module imports (`from './x.js'`), as served paths.
    fn imports(source: &str) -> Vec<String> {
        source
            .split("from '")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .map(|spec| {
                let name = spec
                    .strip_prefix("./")
                    .unwrap_or_else(|| panic!("{spec}: modules import their siblings as './x.js'"));
                format!("/{name}")
            })
            .collect()
    }

    #[test]
    fn every_asset_has_the_content_type_of_its_extension() {
        for &(path, content_type, body) in ASSETS {
            let expected = match path.rsplit_once('.').map(|(_, ext)| ext) {
                None => HTML,
                Some("css") => CSS,
                Some("js") => JS,
                Some(ext) => panic!("{path}: no content type for .{ext}"),
            };
            assert_eq!(content_type, expected, "{path}");
            assert!(!body.is_empty(), "{path} is empty");
        }
        let mut paths: Vec<_> = ASSETS.iter().map(|(path, ..)| *path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len(), "a path is served twice");
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        let served = |path: &str| ASSETS.iter().any(|(p, ..)| *p == path);
        for &(path, content_type, body) in ASSETS {
            if content_type != JS {
                continue;
            }
            for import in imports(body) {
                assert!(
                    served(&import),
                    "{path} imports {import}, which is not served"
                );
            }
        }
        let (.., index) = ASSETS.iter().find(|(p, ..)| *p == "/").unwrap();
        assert!(index.contains(r#"<script type="module" src="/app.js"></script>"#));
    }

    #[test]
    fn every_script_in_the_assets_dir_is_served() {
        // Cargo sets the variable when it runs the test too: the tree's path
        // now, not where it was when the test was built.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        let dir = manifest.join("assets");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".js") {
                let path = format!("/{name}");
                assert!(
                    ASSETS.iter().any(|(p, ..)| *p == path),
                    "assets/{name} is not in ASSETS"
                );
            }
        }
    }
}
