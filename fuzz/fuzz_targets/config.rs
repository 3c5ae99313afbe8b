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
    let written = toml::to_string_pretty(&config).expect("a parsed config serializes");
    match ConfigFile::parse(&written) {
        Ok(again) => assert_eq!(again, config),
        Err(e) => panic!("a valid config, written back, does not parse: {e:#}\n{written}"),
    }
});
