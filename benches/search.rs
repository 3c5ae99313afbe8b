//! Search over one large namespace: 100,000 objects (`P3_BENCH_OBJECTS=N`
//! for another count) on a local 3-node cluster (separate `p3ctl` processes
//! on 127.0.0.1), written through one node's local API by 16 channels at
//! once, each with a type and two numeric metadata fields. Once the last one
//! is searchable, each query below is searched 20 times through the same node
//! and its latency reported (p50, p99, max), with the number of matches,
//! which is checked against what the objects were written with. The last
//! query has no condition an index can look up (`content ~`), so it reads
//! every row of every shard: what every search cost before terms.
//!
//! Run with `cargo bench --bench search`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::Cluster;
use p3::objectspace::{
    object::{MetaValue, PutOptions},
    Space,
};

/// Channels writing the objects at once.
const WRITERS: u64 = 16;

/// Searches timed per query.
const ROUNDS: usize = 20;

/// Objects per value of `meta.group`.
const GROUPS: u64 = 100;

fn options(i: u64) -> PutOptions {
    let mut options = PutOptions {
        type_tag: if i % 2 == 0 { "even" } else { "odd" }.into(),
        ..PutOptions::default()
    };
    options.meta.insert("n".into(), MetaValue::Num(i as f64));
    options
        .meta
        .insert("group".into(), MetaValue::Num((i % GROUPS) as f64));
    options
}

/// Writes objects `0..count` as `bench/obj/NNNNNN`, each a 100-byte value.
async fn populate(space: &Space, count: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let mut channel = space.channel().await.expect("channel");
        let next = next.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let value = format!("{i:0100}");
                channel
                    .put_bytes(&format!("bench/obj/{i:06}"), &options(i), value.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("put of object {i}: {e}"));
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let count: u64 = std::env::var("P3_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    assert!(count >= 1_000, "P3_BENCH_OBJECTS must be at least 1000");
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let mut space = Space::connect(&cluster.nodes[0].dir)
            .await
            .expect("connect");
        space.create_namespace("bench").await.expect("namespace");
        let started = Instant::now();
        populate(&space, count).await;
        let written = started.elapsed();
        println!(
            "wrote {count} objects in {:.1} s ({:.0}/s)",
            written.as_secs_f64(),
            count as f64 / written.as_secs_f64()
        );
        // Indexing follows the writes by moments: wait for the last one.
        let last = format!("meta.n = {}", count - 1);
        let deadline = Instant::now() + Duration::from_secs(120);
        while space.search("bench", &last).await.expect("search").len() != 1 {
            assert!(
                Instant::now() < deadline,
                "the last object never became searchable"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let mid = count / 2;
        let queries: Vec<(String, u64)> = vec![
            (format!("meta.n = {mid}"), 1),
            (format!("meta.n >= {mid} and meta.n < {}", mid + 10), 10),
            (format!("name ~ \"obj/{:05}*\"", mid / 10), 10),
            (
                format!("meta.group = 7 and type = odd and meta.n < {}", 10 * GROUPS),
                10,
            ),
            (
                "meta.group = 7".into(),
                (0..count).filter(|i| i % GROUPS == 7).count() as u64,
            ),
            // Nothing to look up: every row of every shard is read.
            (
                format!("content ~ \"{mid:07}\""),
                (0..count)
                    .filter(|i| format!("{i:0100}").contains(&format!("{mid:07}")))
                    .count() as u64,
            ),
        ];
        println!("| query | matches | p50 | p99 | max |");
        println!("|---|---|---|---|---|");
        for (query, expected) in queries {
            let mut times = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let asked = Instant::now();
                let found = space.search("bench", &query).await.expect("search");
                times.push(asked.elapsed());
                assert_eq!(found.len() as u64, expected, "matches of {query}");
            }
            times.sort();
            println!(
                "| `{query}` | {expected} | {} | {} | {} |",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                ms(times[times.len() - 1])
            );
        }
    });
}
