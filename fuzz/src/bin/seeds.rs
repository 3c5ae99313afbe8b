//! Writes the seed corpus: `seeds DIR` fills `DIR/<target>/` with real
//! encoded messages (see `p3_fuzz`) and hand-written names, queries and
//! configs. Run by `scripts/fuzz --write-seeds`.

use std::{fs, path::Path};

// cargo fuzz builds this with the targets' coverage instrumentation, whose
// hooks libFuzzer defines: link it, with the one function it calls (unused:
// this program's own `main` runs, not libFuzzer's).
extern crate libfuzzer_sys;

/// libFuzzer's entry into a fuzz target; never called here.
#[no_mangle]
#[allow(improper_ctypes_definitions)]
pub extern "C" fn rust_fuzzer_test_input(_bytes: &[u8]) -> i32 {
    0
}

fn write(dir: &Path, target: &str, seeds: &[Vec<u8>]) {
    let dir = dir.join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), seed).expect("write a seed");
    }
}

fn texts(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: seeds DIR");
    let dir = Path::new(&dir);
    use p3_fuzz::{cbor, request_frame, seeds::*};

    let requests: Vec<Vec<u8>> = peer_requests().iter().map(cbor).collect();
    let mut stream = Vec::new();
    for (id, body) in requests.iter().enumerate().take(4) {
        stream.extend(request_frame(0, id as u64, body));
    }
    write(dir, "peer_request", &[requests, vec![stream]].concat());

    let responses: Vec<Vec<u8>> = peer_responses().iter().map(cbor).collect();
    let mut stream = Vec::new();
    for (id, body) in responses.iter().enumerate().take(4) {
        stream.extend(request_frame(1, id as u64, body));
    }
    stream.extend(request_frame(2, 9, b""));
    write(dir, "peer_response", &[responses, vec![stream]].concat());

    write(dir, "blob_stream", &blob_stream());
    write(dir, "manifest", &{
        let mut seeds: Vec<Vec<u8>> = manifests().iter().map(cbor).collect();
        seeds.push(
            p3_objectspace::blob::BlobHash::of(b"hello")
                .to_string()
                .into_bytes(),
        );
        seeds
    });
    write(dir, "api_request", &api_requests());
    write(dir, "api_response", &api_responses());
    write(
        dir,
        "names",
        &[
            texts(&[
                "global",
                "job-7f3a",
                "a.b_c-d",
                "global/readme.txt",
                "global/results/part-0001",
                "p3.system/x",
                "ünïcode ✓/a",
                "global/",
                "/a",
            ]),
            vec![
                cbor(&"global"),
                cbor(&p3_objectspace::ObjectPath::parse("global/a/b").unwrap()),
            ],
        ]
        .concat(),
    );
    write(
        dir,
        "query",
        &texts(&[
            "*",
            "type = matrix-row and meta.row >= 10 and meta.row < 20 and name ~ \"rows/*\"\0rows/0012",
            "content ~ hello\0say hello",
            "size > 100 AND size <= 2e3\0xxxx",
            "meta.owner != \"al\\\"ice\" and name ~ ?ows*\0rows",
            "type = \"unterminated",
            "meta.row = 12\012",
        ]),
    );
    let full_config = toml::to_string_pretty(&p3_cli::config::ConfigFile::default())
        .expect("the default config serializes");
    // A run of quotes longer than toml's writer counts (see the target).
    let quotes = format!(
        "listen = [\"/dns4/{}/tcp/1\"]\nswarm_key_file = '{}'\n",
        "'".repeat(300),
        "\"".repeat(300)
    );
    write(
        dir,
        "config",
        &texts(&[
            "",
            &full_config,
            "listen = [\"/ip4/0.0.0.0/tcp/4370\"]\nseeds = [\"/dns4/seed.example/tcp/4370/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]\nhttp_listen = \"off\"\n",
            "[membership]\nlease_ms = 300\ndrift_ms = 299\n",
            "[network]\nrequest_timeout_secs = 0\n",
            "swarm_key_file = \"swarm.key\"\n[space]\nreplicas = 5\n",
            "/key/swarm/psk/1.0.0/\n/base16/\n0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
            &quotes,
        ]),
    );
    write(dir, "membership", &membership());
}
