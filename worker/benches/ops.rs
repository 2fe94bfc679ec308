//! The worker's analysis pipeline on the CPU against OpenCV's C++ implementation of the same
//! ops on the same frames, for 640×480 and 1920×1080 at batch 1, 8 and 32.
//!
//! Run: `cargo bench -p framefleet-worker --bench ops`. Criterion prints frames/s
//! ("thrpt", elements = frames) for each group:
//! - `candle_cpu`: `ops::analyse_batch` — pack → area downscale to ≤ 480 px (the worker default) → grayscale →
//!   5×5 Gaussian blur → Sobel x/y + magnitude → mean, std, sharpness, edge strength →
//!   motion mask, box and background update against each frame's own channel background.
//! - `opencv_cpp`: the same steps with OpenCV 4.6 (`cvtColor`, `resize(INTER_AREA)`,
//!   `GaussianBlur`, `Sobel`, `magnitude`, `meanStdDev`, `absdiff`, `threshold`,
//!   `boundingRect`, `accumulateWeighted`) in f32, through the `opencv` crate's bindings;
//!   OpenCV's own thread pool is left at its default.
//!
//! The frames are real: frames of Debian's `vtest.avi`, resized to each size.

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use framefleet_worker::decode::DecodedFrame;
use framefleet_worker::ops::{self, AnalysisSettings, FrameInput, MotionState};
use opencv::core::{self as cv, Mat, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use std::hint::black_box;
use std::time::Duration;

#[path = "../tests/support/opencv_reference.rs"]
mod opencv_reference;
use opencv_reference::{SAMPLE_VIDEO, decoded};

// The same allocator as the worker binary, so the figures match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [(&str, i32, i32); 2] = [("640x480", 640, 480), ("1920x1080", 1920, 1080)];
const BATCH_SIZES: [usize; 3] = [1, 8, 32];

/// `count` consecutive frames of the sample video as RGB Mats of `width`×`height`.
fn video_frames(count: usize, width: i32, height: i32) -> Vec<Mat> {
    let mut capture = videoio::VideoCapture::from_file(SAMPLE_VIDEO, videoio::CAP_ANY).expect("open the sample video");
    let mut frames = Vec::with_capacity(count);
    let mut bgr = Mat::default();
    while frames.len() < count && capture.read(&mut bgr).expect("read a frame") {
        let mut resized = Mat::default();
        imgproc::resize(
            &bgr,
            &mut resized,
            Size::new(width, height),
            0.0,
            0.0,
            imgproc::INTER_LINEAR,
        )
        .expect("resize");
        let mut rgb = Mat::default();
        imgproc::cvt_color_def(&resized, &mut rgb, imgproc::COLOR_BGR2RGB).expect("bgr → rgb");
        frames.push(rgb);
    }
    assert_eq!(frames.len(), count, "the sample video is too short");
    frames
}

/// OpenCV's per-channel state: the running-average background.
struct OpenCvChannel {
    background: Option<Mat>,
}

/// The worker's analysis of one frame, step for step, in OpenCV.
fn opencv_analyse(rgb: &Mat, channel: &mut OpenCvChannel, settings: &AnalysisSettings) -> (f64, Option<cv::Rect>) {
    let gray = opencv_reference::luma(rgb);
    let factor = ops::analysis_factor(rgb.cols() as usize, rgb.rows() as usize, settings.max_side) as i32;
    let mut luma = Mat::default();
    imgproc::resize(
        &gray,
        &mut luma,
        Size::new(rgb.cols() / factor, rgb.rows() / factor),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )
    .expect("downscale");
    let blurred = opencv_reference::gaussian_blur_5(&luma);
    let (gradient_x, gradient_y) = opencv_reference::sobel_xy(&blurred);
    let mut magnitude = Mat::default();
    cv::magnitude(&gradient_x, &gradient_y, &mut magnitude).expect("magnitude");

    let mean_luma = cv::mean_def(&blurred).expect("mean")[0];
    let mut mean = cv::Scalar::default();
    let mut std_dev = cv::Scalar::default();
    cv::mean_std_dev_def(&luma, &mut mean, &mut std_dev).expect("std");
    let mut detail = Mat::default();
    cv::absdiff(&luma, &blurred, &mut detail).expect("absdiff");
    let sharpness = cv::mean_def(&detail).expect("sharpness")[0];
    let edge_strength = cv::mean_def(&magnitude).expect("edges")[0];

    let background = channel.background.get_or_insert_with(|| blurred.clone());
    let mut difference = Mat::default();
    cv::absdiff(&blurred, &*background, &mut difference).expect("absdiff");
    let mut mask = Mat::default();
    imgproc::threshold(
        &difference,
        &mut mask,
        f64::from(settings.motion_threshold),
        255.0,
        imgproc::THRESH_BINARY,
    )
    .expect("threshold");
    let mut mask_u8 = Mat::default();
    mask.convert_to(&mut mask_u8, cv::CV_8U, 1.0, 0.0).expect("mask to u8");
    let motion = f64::from(cv::count_non_zero(&mask_u8).expect("count")) / (mask_u8.total() as f64);
    let motion_box = (motion > 0.0).then(|| imgproc::bounding_rect(&mask_u8).expect("box"));
    imgproc::accumulate_weighted(
        &blurred,
        background,
        f64::from(settings.background_rate),
        &cv::no_array(),
    )
    .expect("background");
    (mean_luma + std_dev[0] + sharpness + edge_strength + motion, motion_box)
}

fn analysis_pipeline(criterion: &mut Criterion) {
    let settings = AnalysisSettings::default();
    let channel_ids: Vec<String> = (0..BATCH_SIZES[2]).map(|index| format!("cam-{index}")).collect();
    for (label, width, height) in SIZES {
        let frames = video_frames(BATCH_SIZES[2], width, height);
        let decoded_frames: Vec<DecodedFrame> = frames.iter().map(decoded).collect();
        let mut group = criterion.benchmark_group(format!("analyse_{label}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for batch_size in BATCH_SIZES {
            group.throughput(Throughput::Elements(batch_size as u64));
            let inputs: Vec<FrameInput<'_>> = decoded_frames[..batch_size]
                .iter()
                .zip(&channel_ids)
                .map(|(pixels, channel_id)| FrameInput { channel_id, pixels })
                .collect();
            let mut motion = MotionState::default();
            group.bench_with_input(
                BenchmarkId::new("candle_cpu", batch_size),
                &inputs,
                |bencher, inputs| {
                    bencher
                        .iter(|| ops::analyse_batch(inputs, &mut motion, &Device::Cpu, &settings).expect("analysis"));
                },
            );
            let mut channels: Vec<OpenCvChannel> =
                (0..batch_size).map(|_| OpenCvChannel { background: None }).collect();
            group.bench_with_input(
                BenchmarkId::new("opencv_cpp", batch_size),
                &frames[..batch_size],
                |bencher, frames| {
                    bencher.iter(|| {
                        for (frame, channel) in frames.iter().zip(channels.iter_mut()) {
                            black_box(opencv_analyse(frame, channel, &settings));
                        }
                    });
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, analysis_pipeline);
criterion_main!(benches);
