//! A frame's whole compute on one core — JPEG payload in, scores and motion out — against
//! OpenCV's C++ implementation of the same work, on real frames (Debian's `vtest.avi`
//! resized to 640×480 and 1920×1080 and JPEG-encoded by OpenCV at quality 90, the ingestor's
//! default).
//!
//! Run: `cargo bench -p framefleet-worker --bench ops`. Criterion prints frames/s ("thrpt",
//! elements = frames) per group `frame_<size>`:
//! - `framefleet`: `decode::stage_frame` (libjpeg-turbo to grayscale, DCT-scaled when the
//!   factor allows, then area downscale to ≤ 480 px) → `ops::analyse_batch` (the fused CPU
//!   kernel: 5×5 Gaussian, Sobel magnitude, mean, std, sharpness, edge strength, motion mask,
//!   box and background update), on a one-thread pool.
//! - `opencv_cpp`: what a hand-written OpenCV program does: `imdecode` (colour) → `cvtColor`
//!   → `resize(INTER_AREA)` → `GaussianBlur` → `Sobel` ×2 → `magnitude` → `mean`,
//!   `meanStdDev`, `absdiff` → `absdiff`, `threshold`, `countNonZero`, `boundingRect`,
//!   `accumulateWeighted`, in f32, with `cv::setNumThreads(1)`.
//! - `opencv_cpp_reduced`: the same, but decoding with `IMREAD_REDUCED_GRAYSCALE_{2,4,8}`
//!   when the factor allows — the fastest OpenCV route an expert would write.
//! - `framefleet_stage_only`, `framefleet_analyse_only`: the two halves of `framefleet`.
//! - `libjpeg_turbo_gray_scaled`: the decoder alone, as the worker calls it (grayscale, DCT
//!   scale), into a reused buffer: the JPEG-decode limit of a consumer on one core.
//!   `libjpeg_turbo_colour`: the full colour decode a hand-written OpenCV script starts with.
//! - `framefleet_batch32`: 32 frames of 32 channels, staged and analysed as the worker does a
//!   batch, on a pool of every core (the worker's default).

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use framefleet_worker::decode::{dct_scale, stage_frame};
use framefleet_worker::ops::{self, AnalysisSettings, FrameInput, MotionState, StagedFrame};
use opencv::core::{self as cv, Mat, Size};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

#[path = "../tests/support/opencv_reference.rs"]
#[allow(dead_code)] // `luma` serves the correctness tests, not the bench
mod opencv_reference;
use opencv_reference::SAMPLE_VIDEO;

// The same allocator as the worker binary, so the figures match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [(&str, i32, i32); 2] = [("640x480", 640, 480), ("1920x1080", 1920, 1080)];
const FRAMES: usize = 32;
/// The ingestor's default `--jpeg-quality`, so the payloads are the ones the worker meets.
const JPEG_QUALITY: i32 = 90;

/// `count` consecutive frames of the sample video as JPEGs of `width`×`height`.
fn video_jpegs(count: usize, width: i32, height: i32) -> Vec<Vec<u8>> {
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
        let mut jpeg = cv::Vector::<u8>::new();
        let quality = cv::Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, JPEG_QUALITY]);
        imgcodecs::imencode(".jpg", &resized, &mut jpeg, &quality).expect("encode");
        frames.push(jpeg.to_vec());
    }
    assert_eq!(frames.len(), count, "the sample video is too short");
    frames
}

/// OpenCV's per-channel state: the running-average background.
struct OpenCvChannel {
    background: Option<Mat>,
}

/// The worker's analysis of one frame, step for step, in OpenCV; `reduced` decodes with
/// OpenCV's DCT-scaled grayscale modes.
fn opencv_analyse(jpeg: &[u8], channel: &mut OpenCvChannel, settings: &AnalysisSettings, reduced: bool) -> f64 {
    let buffer = Mat::from_slice(jpeg).expect("buffer");
    let mut luma = Mat::default();
    let gray_u8 = if reduced {
        // The analysis factor of the frame, read from its header as a user would: decode
        // once at full size is what we avoid, so the sizes are known from the schema.
        let factor = channel_factor(jpeg, settings);
        let mode = match factor {
            f if f % 8 == 0 => imgcodecs::IMREAD_REDUCED_GRAYSCALE_8,
            f if f % 4 == 0 => imgcodecs::IMREAD_REDUCED_GRAYSCALE_4,
            f if f % 2 == 0 => imgcodecs::IMREAD_REDUCED_GRAYSCALE_2,
            _ => imgcodecs::IMREAD_GRAYSCALE,
        };
        imgcodecs::imdecode(&buffer, mode).expect("decode")
    } else {
        let bgr = imgcodecs::imdecode(&buffer, imgcodecs::IMREAD_COLOR).expect("decode");
        let mut gray = Mat::default();
        imgproc::cvt_color_def(&bgr, &mut gray, imgproc::COLOR_BGR2GRAY).expect("gray");
        gray
    };
    let mut gray = Mat::default();
    gray_u8.convert_to(&mut gray, cv::CV_32F, 1.0, 0.0).expect("to f32");
    let factor = ops::analysis_factor(gray.cols() as usize, gray.rows() as usize, settings.max_side) as i32;
    imgproc::resize(
        &gray,
        &mut luma,
        Size::new(gray.cols() / factor, gray.rows() / factor),
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
    mean_luma + std_dev[0] + sharpness + edge_strength + motion + f64::from(motion_box.map_or(0, |rect| rect.width))
}

/// The analysis factor of a JPEG's frame (its size from the header).
fn channel_factor(jpeg: &[u8], settings: &AnalysisSettings) -> usize {
    let mut decompressor = turbojpeg::Decompressor::new().expect("decompressor");
    let header = decompressor.read_header(jpeg).expect("header");
    ops::analysis_factor(header.width, header.height, settings.max_side)
}

fn schema(width: i32, height: i32) -> FrameSchema {
    FrameSchema {
        version: 1,
        width: width as u32,
        height: height as u32,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: 15.0,
    }
}

fn framefleet_frame(jpeg: &[u8], schema: &FrameSchema, motion: &mut MotionState, settings: &AnalysisSettings) {
    let staged = stage_frame(jpeg, schema, settings.max_side).expect("stage");
    let input = FrameInput {
        channel_id: "cam",
        frame: &staged,
    };
    black_box(ops::analyse_batch(&[input], motion, &Device::Cpu, settings).expect("analysis"));
}

fn whole_frame(criterion: &mut Criterion) {
    opencv::core::set_num_threads(1).expect("one OpenCV thread");
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    let all_cores = rayon::ThreadPoolBuilder::new().build().expect("pool");
    let settings = AnalysisSettings::default();
    let channel_ids: Vec<String> = (0..FRAMES).map(|index| format!("cam-{index}")).collect();
    for (label, width, height) in SIZES {
        let jpegs = video_jpegs(FRAMES, width, height);
        let schema = schema(width, height);
        let mut group = criterion.benchmark_group(format!("frame_{label}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .throughput(Throughput::Elements(FRAMES as u64));
        let mut motion = MotionState::default();
        group.bench_function(BenchmarkId::new("framefleet", "1 core"), |bencher| {
            bencher.iter(|| {
                one_thread.install(|| {
                    for jpeg in &jpegs {
                        framefleet_frame(jpeg, &schema, &mut motion, &settings);
                    }
                });
            });
        });
        // The two stages of `framefleet` apart: decode + staging, then the analysis.
        group.bench_function(BenchmarkId::new("framefleet_stage_only", "1 core"), |bencher| {
            bencher.iter(|| {
                for jpeg in &jpegs {
                    black_box(stage_frame(jpeg, &schema, settings.max_side).expect("stage"));
                }
            });
        });
        // The decoder alone, the floor under any consumer of these frames: libjpeg-turbo to
        // grayscale at the DCT scale the worker uses into a reused buffer (nothing else the
        // worker does), and to full colour (what `imdecode(IMREAD_COLOR)` does first).
        for (name, format, scaled) in [
            ("libjpeg_turbo_gray_scaled", turbojpeg::PixelFormat::GRAY, true),
            ("libjpeg_turbo_colour", turbojpeg::PixelFormat::BGR, false),
        ] {
            let mut decompressor = turbojpeg::Decompressor::new().expect("decompressor");
            let factor = ops::analysis_factor(width as usize, height as usize, settings.max_side);
            let denominator = if scaled { dct_scale(factor) } else { 1 };
            let scaling = turbojpeg::ScalingFactor::new(1, denominator);
            decompressor.set_scaling_factor(scaling).expect("scaling");
            let header = decompressor.read_header(&jpegs[0]).expect("header").scaled(scaling);
            let mut image = turbojpeg::Image {
                pixels: vec![0_u8; header.width * header.height * format.size()],
                width: header.width,
                pitch: header.width * format.size(),
                height: header.height,
                format,
            };
            group.bench_function(BenchmarkId::new(name, "1 core"), |bencher| {
                bencher.iter(|| {
                    for jpeg in &jpegs {
                        decompressor.decompress(jpeg, image.as_deref_mut()).expect("decode");
                    }
                    black_box(&image.pixels);
                });
            });
        }
        let staged: Vec<StagedFrame> = jpegs
            .iter()
            .map(|jpeg| stage_frame(jpeg, &schema, settings.max_side).expect("stage"))
            .collect();
        let mut motion = MotionState::default();
        group.bench_function(BenchmarkId::new("framefleet_analyse_only", "1 core"), |bencher| {
            bencher.iter(|| {
                one_thread.install(|| {
                    for frame in &staged {
                        let input = FrameInput {
                            channel_id: "cam",
                            frame,
                        };
                        black_box(
                            ops::analyse_batch(&[input], &mut motion, &Device::Cpu, &settings).expect("analysis"),
                        );
                    }
                });
            });
        });
        for (name, reduced) in [("opencv_cpp", false), ("opencv_cpp_reduced", true)] {
            let mut channel = OpenCvChannel { background: None };
            group.bench_function(BenchmarkId::new(name, "1 core"), |bencher| {
                bencher.iter(|| {
                    for jpeg in &jpegs {
                        black_box(opencv_analyse(jpeg, &mut channel, &settings, reduced));
                    }
                });
            });
        }
        let mut motion = MotionState::default();
        group.bench_function(
            BenchmarkId::new(
                "framefleet_batch32",
                format!("{} cores", all_cores.current_num_threads()),
            ),
            |bencher| {
                bencher.iter(|| {
                    all_cores.install(|| {
                        let staged: Vec<StagedFrame> = jpegs
                            .par_iter()
                            .map(|jpeg| stage_frame(jpeg, &schema, settings.max_side).expect("stage"))
                            .collect();
                        let inputs: Vec<FrameInput<'_>> = staged
                            .iter()
                            .zip(&channel_ids)
                            .map(|(frame, channel_id)| FrameInput { channel_id, frame })
                            .collect();
                        black_box(ops::analyse_batch(&inputs, &mut motion, &Device::Cpu, &settings).expect("analysis"));
                    });
                });
            },
        );
        group.finish();
    }
}

criterion_group!(benches, whole_frame);
criterion_main!(benches);
