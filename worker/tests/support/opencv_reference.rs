//! The OpenCV side of the comparisons, shared by `tests/ops_vs_opencv.rs` (correctness) and
//! `benches/ops.rs` (speed), so both measure against the same reference calls. OpenCV is a
//! dev-dependency only; the worker binary never links it.

use opencv::core::{self as cv, Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;

/// Debian `opencv-doc`'s 768×576 pedestrians video, recorded by no one on the team.
pub const SAMPLE_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

/// BT.601 luma in f32, as the worker computes it: `convertTo(CV_32F)` then `cvtColor`.
pub fn luma(rgb: &Mat) -> Mat {
    let mut rgb_f32 = Mat::default();
    rgb.convert_to(&mut rgb_f32, cv::CV_32FC3, 1.0, 0.0).expect("to f32");
    let mut gray = Mat::default();
    imgproc::cvt_color_def(&rgb_f32, &mut gray, imgproc::COLOR_RGB2GRAY).expect("gray");
    gray
}

/// `GaussianBlur` ksize 5, sigma 0 (OpenCV's fixed [1 4 6 4 1]/16 kernel); the worker repeats
/// edge pixels, which is OpenCV's BORDER_REPLICATE.
pub fn gaussian_blur_5(image: &Mat) -> Mat {
    let mut blurred = Mat::default();
    imgproc::gaussian_blur(image, &mut blurred, Size::new(5, 5), 0.0, 0.0, cv::BORDER_REPLICATE).expect("blur");
    blurred
}

/// 3×3 `Sobel` x and y derivatives in f32 with replicated borders.
pub fn sobel_xy(image: &Mat) -> (Mat, Mat) {
    let derivative = |dx: i32, dy: i32| {
        let mut gradient = Mat::default();
        imgproc::sobel(
            image,
            &mut gradient,
            cv::CV_32F,
            dx,
            dy,
            3,
            1.0,
            0.0,
            cv::BORDER_REPLICATE,
        )
        .expect("sobel");
        gradient
    };
    (derivative(1, 0), derivative(0, 1))
}
