use super::staging::{PixelLayout, PixelView, area_luma};
use super::*;

/// A `width`×`height` RGB frame staged at `max_side`.
fn staged(width: usize, height: usize, max_side: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> StagedFrame {
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            rgb.extend_from_slice(&pixel(x, y));
        }
    }
    let factor = analysis_factor(width, height, max_side);
    StagedFrame {
        full_size: (width, height),
        factor,
        luma: area_luma(PixelView::packed(&rgb, width, height, PixelLayout::Rgb), factor).expect("luma"),
    }
}

/// A `width`×`height` 8-bit gray frame at full size: staged as the bytes themselves, so it
/// takes the integer kernel.
fn staged_gray(width: usize, height: usize, byte: impl Fn(usize, usize) -> u8) -> StagedFrame {
    let gray: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .map(|(x, y)| byte(x, y))
        .collect();
    let luma = area_luma(PixelView::packed(&gray, width, height, PixelLayout::Gray), 1).expect("luma");
    assert!(
        matches!(luma, staging::StagedLuma::Bytes(_)),
        "gray at factor 1 stays bytes"
    );
    StagedFrame {
        full_size: (width, height),
        factor: 1,
        luma,
    }
}

/// A grey frame with a white square whose top-left corner is at (`left`, `top`).
fn square_at(left: usize, top: usize) -> StagedFrame {
    staged(64, 48, 480, move |x, y| {
        if (left..left + 10).contains(&x) && (top..top + 8).contains(&y) {
            [255, 255, 255]
        } else {
            [60, 60, 60]
        }
    })
}

fn analyse_on(
    frames: &[(&str, &StagedFrame)],
    motion: &mut MotionState,
    device: &Device,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    let inputs: Vec<FrameInput<'_>> = frames
        .iter()
        .map(|&(channel_id, frame)| FrameInput { channel_id, frame })
        .collect();
    analyse_batch(&inputs, motion, device, &AnalysisSettings::default())
}

fn analyse(frames: &[(&str, &StagedFrame)], motion: &mut MotionState) -> Vec<FrameAnalysis> {
    analyse_on(frames, motion, &Device::Cpu).expect("analysis")
}

#[test]
fn scores_separate_flat_from_detailed_frames() {
    let flat = staged(32, 32, 480, |_, _| [100, 100, 100]);
    let checkerboard = staged(
        32,
        32,
        480,
        |x, y| if (x + y) % 2 == 0 { [255, 255, 255] } else { [0, 0, 0] },
    );
    let stripes = staged(32, 32, 480, |x, _| if x < 16 { [0, 0, 0] } else { [255, 255, 255] });
    let analyses = analyse(
        &[("flat", &flat), ("checks", &checkerboard), ("stripes", &stripes)],
        &mut MotionState::default(),
    );
    let [flat, checkerboard, stripes] = [analyses[0].scores, analyses[1].scores, analyses[2].scores];
    assert!((flat.mean_luma - 100.0).abs() < 0.01, "{flat:?}");
    assert!(
        flat.sharpness < 0.01 && flat.contrast < 0.01 && flat.edge_strength < 0.01,
        "{flat:?}"
    );
    assert!(
        checkerboard.sharpness > 50.0,
        "a checkerboard is all detail: {checkerboard:?}"
    );
    assert!((checkerboard.contrast - 127.5).abs() < 0.5, "{checkerboard:?}");
    assert!(stripes.edge_strength > 10.0, "{stripes:?}");
    assert!(analyses.iter().all(|analysis| analysis.motion_box.is_none()));
}

#[test]
fn motion_is_found_where_the_square_moved() {
    let mut motion = MotionState::default();
    let first = analyse(&[("cam", &square_at(5, 5))], &mut motion);
    assert_eq!(first[0].scores.motion, 0.0, "a channel's first frame is its background");
    assert_eq!(first[0].motion_box, None);

    let moved = analyse(&[("cam", &square_at(40, 30))], &mut motion);
    let motion_box = moved[0].motion_box.expect("the square moved");
    assert!(moved[0].scores.motion > 0.02, "{:?}", moved[0].scores);
    // Where it left and where it arrived, widened by at most the blur radius.
    assert!(
        motion_box.x <= 5 && motion_box.x + motion_box.width >= 50,
        "{motion_box:?}"
    );
    assert!(
        motion_box.y <= 5 && motion_box.y + motion_box.height >= 38,
        "{motion_box:?}"
    );
    assert!(motion_box.x + motion_box.width <= 64 && motion_box.y + motion_box.height <= 48);
    assert_eq!(motion.channels(), 1);
}

#[test]
fn channels_have_separate_backgrounds() {
    let mut motion = MotionState::default();
    analyse(&[("a", &square_at(5, 5)), ("b", &square_at(40, 30))], &mut motion);
    // The same frames again: nothing moved on either channel.
    let again = analyse(&[("b", &square_at(40, 30)), ("a", &square_at(5, 5))], &mut motion);
    assert!(again.iter().all(|analysis| analysis.motion_box.is_none()), "{again:?}");
}

#[test]
fn several_frames_of_a_channel_in_one_batch_equal_one_at_a_time() {
    let frames = [square_at(5, 5), square_at(20, 10), square_at(40, 30), square_at(5, 5)];
    let channels = ["cam", "other", "cam", "cam"];
    let batch: Vec<(&str, &StagedFrame)> = channels.iter().copied().zip(&frames).collect();
    let together = analyse(&batch, &mut MotionState::default());
    let mut sequential_motion = MotionState::default();
    let one_by_one: Vec<FrameAnalysis> = batch
        .iter()
        .flat_map(|&input| analyse(&[input], &mut sequential_motion))
        .collect();
    assert_eq!(together, one_by_one);
    assert!(
        together[2].motion_box.is_some(),
        "cam moved between its first two frames"
    );
    assert!(together[1].motion_box.is_none(), "`other` has one frame only");
}

#[test]
fn a_size_change_restarts_the_background() {
    let mut motion = MotionState::default();
    analyse(&[("cam", &square_at(5, 5))], &mut motion);
    let larger = staged(80, 60, 480, |_, _| [200, 200, 200]);
    let analysed = analyse(&[("cam", &larger)], &mut motion);
    assert_eq!(analysed[0].motion_box, None);
    assert_eq!(analysed[0].scores.motion, 0.0);
}

/// The GPU path's op graph, run by candle on the CPU, gives what the CPU kernel gives: the
/// kernel is the reference the graph is held to, frame by frame and through the background.
#[test]
fn tensor_graph_agrees_with_the_cpu_kernel() {
    let noisy = |seed: usize| {
        staged(96, 72, 48, move |x, y| {
            let value = ((x * 7919 + y * 104_729 + seed * 31) % 251) as u8;
            [value, value.wrapping_mul(3), 255 - value]
        })
    };
    // Byte planes blur onto a 1/256 grid, and frames that are shifts of each other put many
    // differences exactly on the motion threshold: both paths must keep a first frame's
    // background exactly (the graph once rounded it, and 12 of 1 200 pixels moved differently).
    let gray = |seed: usize| staged_gray(40, 30, move |x, y| ((x * 7919 + y * 104_729 + seed * 31) % 256) as u8);
    let frames = [
        square_at(5, 5),
        noisy(1),
        gray(1),
        square_at(40, 30),
        noisy(2),
        gray(2),
        square_at(20, 10),
    ];
    let channels = ["cam", "noise", "gray", "cam", "noise", "gray", "cam"];
    let batch: Vec<(&str, &StagedFrame)> = channels.iter().copied().zip(&frames).collect();
    let mut kernel_motion = MotionState::default();
    let mut graph_motion = MotionState::default();
    for _ in 0..2 {
        let kernel = analyse(&batch, &mut kernel_motion);
        let inputs: Vec<FrameInput<'_>> = batch
            .iter()
            .map(|&(channel_id, frame)| FrameInput { channel_id, frame })
            .collect();
        let graph = tensor::analyse_batch(
            &inputs,
            &mut graph_motion.device,
            &Device::Cpu,
            &AnalysisSettings::default(),
        )
        .expect("graph");
        for (index, (ours, theirs)) in kernel.iter().zip(&graph).enumerate() {
            let (a, b) = (ours.scores, theirs.scores);
            for (name, x, y) in [
                ("mean_luma", a.mean_luma, b.mean_luma),
                ("contrast", a.contrast, b.contrast),
                ("sharpness", a.sharpness, b.sharpness),
                ("edge_strength", a.edge_strength, b.edge_strength),
                ("motion", a.motion, b.motion),
            ] {
                assert!((x - y).abs() < 1e-3, "frame {index}: {name} {x} vs {y}");
            }
            assert_eq!(ours.motion_box, theirs.motion_box, "frame {index}");
        }
    }
}
