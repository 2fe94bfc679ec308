//! The worker's staging, CPU kernel and GPU op graph against OpenCV's own implementation on
//! real video frames. OpenCV is a dev-dependency only: it is the reference here, never
//! linked into the worker.

use candle_core::Device;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use framefleet_worker::decode::stage_frame;
use framefleet_worker::ops::staging::{BytePlane, LumaPlane, PixelLayout, PixelView, StagedLuma, area_luma};
use framefleet_worker::ops::{self, AnalysisSettings, filters, motion, tensor};
use opencv::core::{self as cv, Mat, Size};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};
use opencv_reference::SAMPLE_VIDEO;

#[path = "support/opencv_reference.rs"]
mod opencv_reference;
/// Both sides compute in f32; the only differences are summation order and rounding.
const TOLERANCE: f32 = 0.01;

/// Frame `index` of the sample video (768×576) as an 8-bit RGB Mat.
fn rgb_frame(index: usize) -> Mat {
    let mut capture = videoio::VideoCapture::from_file(SAMPLE_VIDEO, videoio::CAP_ANY).expect("open the sample video");
    let mut bgr = Mat::default();
    for _ in 0..=index {
        assert!(
            capture.read(&mut bgr).expect("read"),
            "the video has fewer than {index} frames"
        );
    }
    converted(&bgr, imgproc::COLOR_BGR2RGB)
}

/// `image` through OpenCV's `cvtColor` with `code`.
fn converted(image: &Mat, code: i32) -> Mat {
    let mut out = Mat::default();
    imgproc::cvt_color_def(image, &mut out, code).expect("cvtColor");
    out
}

fn mat_values(mat: &Mat) -> Vec<f32> {
    mat.data_typed::<f32>().expect("f32 data").to_vec()
}

fn plane_of(mat: &Mat) -> LumaPlane {
    LumaPlane::new(mat.cols() as usize, mat.rows() as usize, mat_values(mat)).expect("plane")
}

fn our_luma(rgb: &Mat, factor: usize) -> LumaPlane {
    let view = PixelView::packed(
        rgb.data_bytes().expect("continuous frame"),
        rgb.cols() as usize,
        rgb.rows() as usize,
        PixelLayout::Rgb,
    );
    area_luma(view, factor).expect("luma").to_floats().into_owned()
}

fn opencv_area(image: &Mat, factor: i32) -> Mat {
    let mut small = Mat::default();
    imgproc::resize(
        image,
        &mut small,
        Size::new(image.cols() / factor, image.rows() / factor),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )
    .expect("resize");
    small
}

fn largest_difference(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

fn mean_difference(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual.iter().zip(expected).map(|(a, e)| (a - e).abs()).sum::<f32>() / actual.len() as f32
}

/// The values of frame `index` of an (N, 1, H, W) tensor, row-major like an OpenCV Mat.
fn frame_values(batch: &candle_core::Tensor, index: usize) -> Vec<f32> {
    batch
        .get(index)
        .and_then(|frame| frame.flatten_all())
        .and_then(|values| values.to_vec1::<f32>())
        .expect("frame values")
}

fn schema(encoding: FrameEncoding) -> FrameSchema {
    FrameSchema {
        version: 1,
        width: 768,
        height: 576,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: encoding.into(),
        fps: 10.0,
    }
}

#[test]
fn staging_matches_opencv_luma_and_inter_area() {
    let frame = rgb_frame(20);
    let expected_luma = opencv_reference::luma(&frame);
    let difference = largest_difference(&our_luma(&frame, 1).values, &mat_values(&expected_luma));
    assert!(difference < TOLERANCE, "luma differs from OpenCV by up to {difference}");
    for factor in [2, 3] {
        let ours = our_luma(&frame, factor);
        let expected = opencv_area(&expected_luma, factor as i32);
        assert_eq!((ours.width, ours.height), (768 / factor, 576 / factor));
        let difference = largest_difference(&ours.values, &mat_values(&expected));
        assert!(
            difference < TOLERANCE,
            "factor {factor}: downscale differs from OpenCV by up to {difference}"
        );
    }
}

/// JPEG frames are staged from the Y channel, at 1/2 or 1/4 scale in the DCT domain when the
/// factor allows: the result is what OpenCV's decode → luma → INTER_AREA gives, up to the
/// rounding of Y to 8 bits, the DCT scaling's slightly different low-pass filter, and
/// saturated colours, where OpenCV clamps the decoded R, G, B and Y is not clamped (measured
/// on this frame: mean |difference| 0.18, 0.31, 0.28 at factors 1, 2, 4; largest 7.4, 5.0, 3.3).
#[test]
fn jpeg_staging_matches_opencv_decode_luma_and_inter_area() {
    let frame = rgb_frame(40);
    let bgr = converted(&frame, imgproc::COLOR_RGB2BGR);
    let mut jpeg = cv::Vector::<u8>::new();
    imgcodecs::imencode_def(".jpg", &bgr, &mut jpeg).expect("encode jpeg");
    let decoded = imgcodecs::imdecode(&jpeg, imgcodecs::IMREAD_COLOR).expect("decode");
    let reference_luma = opencv_reference::luma(&converted(&decoded, imgproc::COLOR_BGR2RGB));
    for (max_side, factor) in [(0, 1), (384, 2), (192, 4)] {
        let staged = stage_frame(jpeg.as_slice(), &schema(FrameEncoding::Jpeg), max_side).expect("stage");
        assert_eq!(staged.factor, factor);
        let expected = mat_values(&opencv_area(&reference_luma, factor as i32));
        let luma = staged.luma.to_floats();
        let (mean, largest) = (
            mean_difference(&luma.values, &expected),
            largest_difference(&luma.values, &expected),
        );
        eprintln!("factor {factor}: mean |difference| {mean:.3}, largest {largest:.1}");
        assert!(
            mean < 0.5 && largest < 10.0,
            "factor {factor}: differs from OpenCV by {mean} on average, up to {largest}"
        );
    }
}

#[test]
fn png_frames_stage_to_the_luma_of_the_pixels_opencv_encoded() {
    let rgb = rgb_frame(5);
    let bgr = converted(&rgb, imgproc::COLOR_RGB2BGR);
    let gray = converted(&rgb, imgproc::COLOR_RGB2GRAY);
    let mut gray_f32 = Mat::default();
    gray.convert_to(&mut gray_f32, cv::CV_32F, 1.0, 0.0).expect("to f32");
    for (source, expected) in [(&bgr, opencv_reference::luma(&rgb)), (&gray, gray_f32)] {
        let mut png = cv::Vector::<u8>::new();
        imgcodecs::imencode_def(".png", source, &mut png).expect("encode png");
        let staged = stage_frame(png.as_slice(), &schema(FrameEncoding::Png), 0).expect("stage png");
        assert_eq!((staged.luma.width(), staged.luma.height()), (768, 576));
        let difference = largest_difference(&staged.luma.to_floats().values, &mat_values(&expected));
        assert!(
            difference < TOLERANCE,
            "PNG is lossless, yet luma differs by {difference}"
        );
    }
}

/// Both CPU kernels' blur, Sobel magnitude and statistics against OpenCV's `GaussianBlur`,
/// `Sobel`, `magnitude`, `mean`, `meanStdDev` and `absdiff`: the f32 kernel on OpenCV's f32
/// luma, the integer kernel on that luma rounded to bytes (what a grayscale JPEG decode gives).
#[test]
fn cpu_kernels_match_opencv_filters_and_statistics() {
    for index in [0, 40] {
        let float_luma = opencv_reference::luma(&rgb_frame(index));
        let mut luma_bytes = Mat::default();
        float_luma
            .convert_to(&mut luma_bytes, cv::CV_8U, 1.0, 0.0)
            .expect("to u8");
        let mut byte_luma = Mat::default();
        luma_bytes
            .convert_to(&mut byte_luma, cv::CV_32F, 1.0, 0.0)
            .expect("to f32");
        let bytes = BytePlane::new(
            luma_bytes.cols() as usize,
            luma_bytes.rows() as usize,
            luma_bytes.data_bytes().expect("continuous").to_vec(),
        )
        .expect("plane");
        let kernels = [
            ("f32", &float_luma, filters::analyse_plane(&plane_of(&float_luma))),
            ("integer", &byte_luma, ops::analyse_luma(&StagedLuma::Bytes(bytes))),
        ];
        for (kernel, luma, features) in kernels {
            check_filters_against_opencv(&format!("frame {index}, {kernel} kernel"), luma, &features);
        }
    }
}

fn check_filters_against_opencv(case: &str, luma: &Mat, features: &ops::FrameFeatures) {
    let blurred = opencv_reference::gaussian_blur_5(luma);
    let difference = largest_difference(&features.blurred.values, &mat_values(&blurred));
    assert!(difference < TOLERANCE, "{case}: blur differs by up to {difference}");

    let (gradient_x, gradient_y) = opencv_reference::sobel_xy(&blurred);
    let mut magnitude = Mat::default();
    cv::magnitude(&gradient_x, &gradient_y, &mut magnitude).expect("magnitude");
    let mut mean = cv::Scalar::default();
    let mut std_dev = cv::Scalar::default();
    cv::mean_std_dev_def(luma, &mut mean, &mut std_dev).expect("std");
    let mut detail = Mat::default();
    cv::absdiff(luma, &blurred, &mut detail).expect("absdiff");
    for (name, ours, theirs) in [
        (
            "mean luma",
            features.mean_luma,
            cv::mean_def(&blurred).expect("mean")[0],
        ),
        ("contrast", features.contrast, std_dev[0]),
        ("sharpness", features.sharpness, cv::mean_def(&detail).expect("mean")[0]),
        (
            "edge strength",
            features.edge_strength,
            cv::mean_def(&magnitude).expect("mean")[0],
        ),
    ] {
        let theirs = theirs as f32;
        assert!(
            (ours - theirs).abs() <= 1e-3 * theirs.abs().max(1.0),
            "{case}: {name} is {ours}, OpenCV says {theirs}"
        );
    }
}

/// The GPU path's graph (run by candle on the CPU here) against OpenCV's blur and Sobel.
#[test]
fn tensor_graph_filters_match_opencv() {
    let luma = opencv_reference::luma(&rgb_frame(10));
    let batch = tensor::planes_to_tensor(&[&plane_of(&luma)], &Device::Cpu).expect("tensor");
    let blurred = tensor::gaussian_blur_5(&batch).expect("blur");
    let expected_blur = opencv_reference::gaussian_blur_5(&luma);
    let difference = largest_difference(&frame_values(&blurred, 0), &mat_values(&expected_blur));
    assert!(difference < TOLERANCE, "blur differs from OpenCV by up to {difference}");

    let (gradient_x, gradient_y) = tensor::sobel(&batch).expect("sobel");
    let magnitude = tensor::gradient_magnitude(&gradient_x, &gradient_y).expect("magnitude");
    let (expected_x, expected_y) = opencv_reference::sobel_xy(&luma);
    let mut expected_magnitude = Mat::default();
    cv::magnitude(&expected_x, &expected_y, &mut expected_magnitude).expect("magnitude");
    // Gradients reach ±1020, so allow for f32 rounding at that scale.
    for (name, ours, theirs) in [
        ("x", &gradient_x, &expected_x),
        ("y", &gradient_y, &expected_y),
        ("magnitude", &magnitude, &expected_magnitude),
    ] {
        let difference = largest_difference(&frame_values(ours, 0), &mat_values(theirs));
        assert!(
            difference < 0.05,
            "Sobel {name} differs from OpenCV by up to {difference}"
        );
    }
}

/// Two frames 30 apart have people walking between them: the CPU kernel's mask must be
/// OpenCV's absdiff + threshold, its background update `accumulateWeighted`, and the GPU
/// graph's the same.
#[test]
fn motion_mask_and_background_match_opencv() {
    let (cv_background, cv_current) = (
        opencv_reference::luma(&rgb_frame(30)),
        opencv_reference::luma(&rgb_frame(60)),
    );
    let threshold = 25.0;
    let rate = 0.05;
    let mut difference = Mat::default();
    cv::absdiff(&cv_current, &cv_background, &mut difference).expect("absdiff");
    let mut expected_mask = Mat::default();
    // THRESH_BINARY keeps values strictly above the threshold; ours keeps those ≥ it.
    imgproc::threshold(
        &difference,
        &mut expected_mask,
        f64::from(threshold) - 1e-3,
        1.0,
        imgproc::THRESH_BINARY,
    )
    .expect("threshold");
    let expected_moving = mat_values(&expected_mask).iter().filter(|&&value| value > 0.0).count();
    assert!(
        expected_moving > 500,
        "people walked between the two frames; only {expected_moving} pixels moved"
    );
    let mut accumulated = cv_background.clone();
    imgproc::accumulate_weighted(&cv_current, &mut accumulated, f64::from(rate), &cv::no_array()).expect("accumulate");
    let settings = AnalysisSettings {
        max_side: 0,
        motion_threshold: threshold,
        background_rate: rate,
    };

    // The CPU kernel.
    let mut background = Some(plane_of(&cv_background));
    let movement = motion::detect_on_host(&mut background, &plane_of(&cv_current), 1, (768, 576), &settings);
    let pixels = (768 * 576) as f32;
    assert!(
        (movement.fraction * pixels - expected_moving as f32).abs() <= 2.0,
        "{} moving pixels, OpenCV says {expected_moving}",
        movement.fraction * pixels
    );
    let mut mask_u8 = Mat::default();
    expected_mask
        .convert_to(&mut mask_u8, cv::CV_8U, 1.0, 0.0)
        .expect("mask to u8");
    let expected_box = imgproc::bounding_rect(&mask_u8).expect("box");
    let motion_box = movement.motion_box.expect("motion");
    assert_eq!(
        (motion_box.x, motion_box.y, motion_box.width, motion_box.height),
        (
            expected_box.x as u32,
            expected_box.y as u32,
            expected_box.width as u32,
            expected_box.height as u32
        )
    );
    let updated = background.expect("background");
    let difference_to_cv = largest_difference(&updated.values, &mat_values(&accumulated));
    assert!(
        difference_to_cv < TOLERANCE,
        "background update differs from OpenCV by up to {difference_to_cv}"
    );

    // The GPU graph's ops.
    let background = tensor::planes_to_tensor(&[&plane_of(&cv_background)], &Device::Cpu).expect("tensor");
    let current = tensor::planes_to_tensor(&[&plane_of(&cv_current)], &Device::Cpu).expect("tensor");
    let mask = tensor::motion_mask(&current, &background, threshold).expect("mask");
    let moving = mask
        .flatten_all()
        .and_then(|values| values.to_vec1::<u8>())
        .expect("mask values")
        .iter()
        .filter(|&&value| value > 0)
        .count();
    assert!(
        moving.abs_diff(expected_moving) <= 2,
        "{moving} moving pixels, OpenCV says {expected_moving}"
    );
    let updated = tensor::update_background(&background, &current, rate).expect("update");
    let difference_to_cv = largest_difference(&frame_values(&updated, 0), &mat_values(&accumulated));
    assert!(
        difference_to_cv < TOLERANCE,
        "background update differs from OpenCV by up to {difference_to_cv}"
    );
    assert_eq!(ops::analysis_factor(768, 576, 0), 1);
}
