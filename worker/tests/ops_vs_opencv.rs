//! The candle ops against OpenCV's own implementation on a real video frame. OpenCV is a
//! dev-dependency only: it is the reference here, never linked into the worker.

use candle_core::Device;
use framefleet_worker::decode::DecodedFrame;
use framefleet_worker::ops;
use opencv::core::{self as cv, Mat, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};

const SAMPLE_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
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

fn decoded(rgb: &Mat) -> DecodedFrame {
    DecodedFrame {
        width: usize::try_from(rgb.cols()).expect("cols"),
        height: usize::try_from(rgb.rows()).expect("rows"),
        rgb: rgb.data_bytes().expect("continuous frame").to_vec(),
    }
}

fn opencv_gray_and_blur(rgb: &Mat) -> (Vec<f32>, Vec<f32>) {
    let mut rgb_f32 = Mat::default();
    rgb.convert_to(&mut rgb_f32, cv::CV_32FC3, 1.0, 0.0).expect("to f32");
    let mut gray = Mat::default();
    imgproc::cvt_color_def(&rgb_f32, &mut gray, imgproc::COLOR_RGB2GRAY).expect("gray");
    let mut blurred = Mat::default();
    // ksize 5 with sigma 0 is OpenCV's fixed [1 4 6 4 1]/16 kernel; the worker repeats edge
    // pixels, which is OpenCV's BORDER_REPLICATE.
    imgproc::gaussian_blur(&gray, &mut blurred, Size::new(5, 5), 0.0, 0.0, cv::BORDER_REPLICATE).expect("blur");
    (
        gray.data_typed::<f32>().expect("gray data").to_vec(),
        blurred.data_typed::<f32>().expect("blur data").to_vec(),
    )
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
