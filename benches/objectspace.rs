//! Put and get of 1 KiB and 1 MiB values on a local 3-node cluster (separate
//! `p3ctl node` processes on 127.0.0.1), through the local API of one node.
//!
//! Run with `cargo bench --bench objectspace`. Each iteration is one complete
//! operation as a client sees it: a put is acknowledged only when the R=3 owners
//! hold the value durably (fsynced), a get asks every owner for the newest version.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use p3::objectspace::{object::PutOptions, Space};

fn bench(c: &mut Criterion) {
    let cluster = common::Cluster::start(3);
    cluster.wait_formed();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let data_dir = cluster.nodes[0].dir.clone();
    let mut space = runtime
        .block_on(Space::connect(&data_dir))
        .expect("connect to node 0");

    let mut group = c.benchmark_group("objectspace");
    group.measurement_time(Duration::from_secs(10));
    for (label, size) in [("1KiB", 1usize << 10), ("1MiB", 1 << 20)] {
        let value: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("put", label), |b| {
            b.iter(|| {
                n += 1;
                // A new name each time; the value changes too, so nothing dedups.
                let mut v = value.clone();
                v[..8].copy_from_slice(&n.to_le_bytes());
                runtime
                    .block_on(space.put_bytes(
                        &format!("global/bench/{label}/{n}"),
                        &PutOptions::default(),
                        &v,
                    ))
                    .expect("put")
            })
        });
        let path = format!("global/bench/{label}/read");
        runtime
            .block_on(space.put_bytes(&path, &PutOptions::default(), &value))
            .expect("put the object to read");
        group.bench_function(BenchmarkId::new("get", label), |b| {
            b.iter(|| {
                let (_, bytes) = runtime.block_on(space.get_bytes(&path)).expect("get");
                assert_eq!(bytes.len(), size);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
