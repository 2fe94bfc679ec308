//! CPU throughput of the worker's op pipeline (pack → grayscale → 5×5 blur → scores) on
//! batches of 640×480 and 1920×1080 frames. Run: `cargo bench -p framefleet-worker --bench ops`.
//! Frames/s = batch size ÷ the time per iteration printed by criterion.

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use framefleet_worker::decode::DecodedFrame;
use framefleet_worker::ops;
use std::time::Duration;

// The same allocator as the worker binary, so the figures match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn synthetic_frame(width: usize, height: usize, seed: usize) -> DecodedFrame {
    // Deterministic texture: gradients plus a pseudo-random pattern, so blur and scores do
    // real work on every pixel.
    let rgb = (0..width * height * 3)
        .map(|index| ((index * 2_654_435_761 + seed * 97) >> 7) as u8)
        .collect();
    DecodedFrame { width, height, rgb }
}

fn op_pipeline(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("score_batch_cpu");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (label, width, height) in [("640x480", 640, 480), ("1920x1080", 1920, 1080)] {
        for batch_size in [1_usize, 8, 32] {
            let frames: Vec<DecodedFrame> = (0..batch_size)
                .map(|seed| synthetic_frame(width, height, seed))
                .collect();
            let batch: Vec<&DecodedFrame> = frames.iter().collect();
            group.throughput(Throughput::Elements(batch_size as u64));
            group.bench_with_input(BenchmarkId::new(label, batch_size), &batch, |bencher, batch| {
                bencher.iter(|| ops::score_batch(batch, &Device::Cpu).expect("scores"));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, op_pipeline);
criterion_main!(benches);
