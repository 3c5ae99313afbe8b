//! `config.toml` (`p3_cli::config::ConfigFile::parse`: TOML and the checks
//! a node makes at start), what a node derives from it (HTTP address, leases,
//! object space and network settings), and swarm key files
//! (`p3_dht::SwarmKey::parse`). A valid config written back parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_cli::config::ConfigFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = p3_dht::SwarmKey::parse(text);
    let Ok(config) = ConfigFile::parse(text) else {
        return;
    };
    let _ = config.http(None);
    let _ = config.lease_times();
    let _ = config.space();
    let _ = config.network(&[], &[]);
    if writer_overflows(&config) {
        return;
    }
    let written = toml::to_string_pretty(&config).expect("a parsed config serializes");
    match ConfigFile::parse(&written) {
        Ok(again) => assert_eq!(again, config),
        Err(e) => panic!("a valid config, written back, does not parse: {e:#}\n{written}"),
    }
});

/// Whether a string of `config` holds a run of more than 255 quotes of one
/// kind. toml's writer (toml_write 0.1.2, and toml_writer 1.1 alike) counts
/// such runs in a `u8`, which overflows: a panic under the overflow checks of
/// this build, harmless without them (the count is only compared with 0 and
/// 2, and its maximum stays at 255). Nodes write only the default config, so
/// no such string reaches the writer outside this target.
fn writer_overflows(config: &ConfigFile) -> bool {
    let long_run = |s: &str| {
        [b'\'', b'"'].iter().any(|&quote| {
            s.as_bytes()
                .split(|&b| b != quote)
                .any(|run| run.len() > usize::from(u8::MAX))
        })
    };
    let path = config.swarm_key_file.as_ref().and_then(|p| p.to_str());
    config
        .listen
        .iter()
        .chain(&config.seeds)
        .map(String::as_str)
        .chain([config.http_listen.as_str()])
        .chain(path)
        .any(long_run)
}
