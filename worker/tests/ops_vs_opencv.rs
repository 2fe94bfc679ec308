//! The candle ops against OpenCV's own implementation on a real video frame. OpenCV is a
//! dev-dependency only: it is the reference here, never linked into the worker.

use candle_core::Device;
use framefleet_worker::decode::DecodedFrame;
use framefleet_worker::ops;
use opencv::core::{self as cv, Mat, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use opencv_reference::{SAMPLE_VIDEO, decoded};

#[path = "support/opencv_reference.rs"]
mod opencv_reference;
/// Both sides compute in f32; the only differences are summation order and rounding.
const TOLERANCE: f32 = 0.01;

/// Frame `index` of the sample video as an 8-bit RGB Mat.
fn rgb_frame(index: usize) -> Mat {
    let mut capture = videoio::VideoCapture::from_file(SAMPLE_VIDEO, videoio::CAP_ANY).expect("open the sample video");
    let mut bgr = Mat::default();
    for _ in 0..=index {
        assert!(
            capture.read(&mut bgr).expect("read"),
            "the video has fewer than {index} frames"
        );
    }
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB).expect("bgr → rgb");
    rgb
}

fn opencv_gray_and_blur(rgb: &Mat) -> (Vec<f32>, Vec<f32>) {
    let gray = opencv_reference::luma(rgb);
    let blurred = opencv_reference::gaussian_blur_5(&gray);
    (mat_values(&gray), mat_values(&blurred))
}

/// The values of frame `index` of an (N, 1, H, W) tensor, row-major like an OpenCV Mat.
fn frame_values(batch: &candle_core::Tensor, index: usize) -> Vec<f32> {
    batch
        .get(index)
        .and_then(|frame| frame.flatten_all())
        .and_then(|values| values.to_vec1::<f32>())
        .expect("frame values")
}

fn largest_difference(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

#[test]
fn grayscale_and_blur_match_opencv_on_real_frames() {
    let frames = [rgb_frame(0), rgb_frame(40)];
    let decoded: Vec<DecodedFrame> = frames.iter().map(decoded).collect();
    let batch = ops::frames_to_tensor(&decoded.iter().collect::<Vec<_>>(), &Device::Cpu).expect("tensor");
    let gray = ops::grayscale(&batch).expect("gray");
    let blurred = ops::gaussian_blur_5(&gray).expect("blur");

    for (index, frame) in frames.iter().enumerate() {
        let (expected_gray, expected_blur) = opencv_gray_and_blur(frame);
        let our_gray = frame_values(&gray, index);
        let our_blur = frame_values(&blurred, index);
        let gray_difference = largest_difference(&our_gray, &expected_gray);
        let blur_difference = largest_difference(&our_blur, &expected_blur);
        assert!(
            gray_difference < TOLERANCE,
            "frame {index}: grayscale differs from OpenCV by up to {gray_difference}"
        );
        assert!(
            blur_difference < TOLERANCE,
            "frame {index}: blur differs from OpenCV by up to {blur_difference}"
        );
    }
}

fn mat_values(mat: &Mat) -> Vec<f32> {
    mat.data_typed::<f32>().expect("f32 data").to_vec()
}

fn our_luma(frames: &[&Mat]) -> candle_core::Tensor {
    let decoded: Vec<DecodedFrame> = frames.iter().map(|frame| decoded(frame)).collect();
    let batch = ops::frames_to_tensor(&decoded.iter().collect::<Vec<_>>(), &Device::Cpu).expect("tensor");
    ops::grayscale(&batch).expect("gray")
}

#[test]
fn sobel_and_magnitude_match_opencv() {
    let frame = rgb_frame(10);
    let luma = our_luma(&[&frame]);
    let (gradient_x, gradient_y) = ops::sobel(&luma).expect("sobel");
    let magnitude = ops::gradient_magnitude(&gradient_x, &gradient_y).expect("magnitude");

    let (expected_x, expected_y) = opencv_reference::sobel_xy(&opencv_reference::luma(&frame));
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

#[test]
fn area_downscale_matches_opencv_inter_area() {
    let frame = rgb_frame(20);
    let luma = our_luma(&[&frame]);
    let factor = ops::analysis_factor(768, 576, 400);
    assert_eq!(factor, 2);
    let small = ops::downscale_area(&luma, factor).expect("downscale");
    assert_eq!(small.dims(), &[1, 1, 288, 384]);

    let mut expected = Mat::default();
    imgproc::resize(
        &opencv_reference::luma(&frame),
        &mut expected,
        Size::new(384, 288),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )
    .expect("resize");
    let difference = largest_difference(&frame_values(&small, 0), &mat_values(&expected));
    assert!(
        difference < TOLERANCE,
        "downscale differs from OpenCV by up to {difference}"
    );
}

/// Two frames 30 apart have people walking between them: the mask must be OpenCV's
/// absdiff + threshold exactly, and the background update its accumulateWeighted.
#[test]
fn motion_mask_and_background_match_opencv() {
    let (earlier, later) = (rgb_frame(30), rgb_frame(60));
    let luma = our_luma(&[&earlier, &later]);
    let background = luma.narrow(0, 0, 1).expect("background");
    let current = luma.narrow(0, 1, 1).expect("current");
    let threshold = 25.0;
    let rate = 0.05;
    let mask = ops::motion_mask(&current, &background, threshold).expect("mask");
    let updated = ops::update_background(&background, &current, rate).expect("update");

    let (cv_background, cv_current) = (opencv_reference::luma(&earlier), opencv_reference::luma(&later));
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
    let our_mask: Vec<f32> = mask
        .flatten_all()
        .and_then(|values| values.to_vec1::<u8>())
        .expect("mask values")
        .into_iter()
        .map(f32::from)
        .collect();
    let expected_mask = mat_values(&expected_mask);
    let moving = our_mask.iter().filter(|&&value| value > 0.0).count();
    assert!(
        moving > 500,
        "people walked between the two frames; only {moving} pixels moved"
    );
    // Luma differs from OpenCV's by float rounding only, so a pixel may land on the other
    // side of the threshold only when its difference is within that rounding of it.
    let differences = mat_values(&difference);
    let unexplained: Vec<f32> = our_mask
        .iter()
        .zip(&expected_mask)
        .zip(&differences)
        .filter(|((ours, theirs), difference)| ours != theirs && (**difference - threshold).abs() > TOLERANCE)
        .map(|(_, difference)| *difference)
        .collect();
    assert!(
        unexplained.is_empty(),
        "mask pixels that differ from OpenCV's away from the threshold: {unexplained:?}"
    );

    let mut accumulated = cv_background.clone();
    imgproc::accumulate_weighted(&cv_current, &mut accumulated, f64::from(rate), &cv::no_array()).expect("accumulate");
    let difference = largest_difference(&frame_values(&updated, 0), &mat_values(&accumulated));
    assert!(
        difference < TOLERANCE,
        "background update differs from OpenCV by up to {difference}"
    );
}

#[test]
fn png_frames_decode_to_the_pixels_opencv_encoded() {
    use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
    use opencv::imgcodecs;
    let rgb = rgb_frame(5);
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut bgr, imgproc::COLOR_RGB2BGR).expect("rgb → bgr");
    let mut gray = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut gray, imgproc::COLOR_RGB2GRAY).expect("gray");
    let schema = FrameSchema {
        version: 1,
        width: 768,
        height: 576,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Png.into(),
        fps: 10.0,
    };
    for (source, expected_rgb) in [
        (&bgr, decoded(&rgb).rgb),
        (&gray, {
            let luma = gray.data_bytes().expect("gray bytes");
            luma.iter().flat_map(|&value| [value, value, value]).collect()
        }),
    ] {
        let mut png = cv::Vector::<u8>::new();
        imgcodecs::imencode_def(".png", source, &mut png).expect("encode png");
        let frame = framefleet_worker::decode::decode_frame(png.as_slice(), &schema).expect("decode png");
        assert_eq!((frame.width, frame.height), (768, 576));
        assert!(
            frame.rgb == expected_rgb,
            "PNG is lossless: the pixels must come back exactly"
        );
    }
}
