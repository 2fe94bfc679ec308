//! Source URIs: which kind of source a channel names, with its options, checked before anything
//! is opened.

use crate::source::frame_source::SourceError;
use std::path::PathBuf;

/// Used when a file does not say its frame rate and its timestamps do not tell it either
/// (PAL's 25 frames/s, the most common CCTV rate).
pub const FALLBACK_FPS: f64 = 25.0;
/// A reported frame rate above this is taken as a container artefact, not a camera's rate:
/// Matroska/WebM recordings without a frame rate are reported by OpenCV as their timebase
/// (1 ms → 1000 frames/s). Faster sources need `?fps=` or `--fps`.
pub const MAX_PLAUSIBLE_FPS: f64 = 240.0;
/// The largest side the coordinator accepts; larger is refused before any allocation.
pub const MAX_DIMENSION: u32 = 16_384;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A file or a directory of images; which one is decided when it is opened.
    Path {
        path: PathBuf,
        looping: bool,
        fps: Option<f64>,
    },
    Network {
        url: String,
    },
    Device {
        device: String,
    },
    Synthetic {
        width: u32,
        height: u32,
        fps: f64,
        /// Fault injection (`?crash_after=N`): the process reading the pattern aborts when it
        /// reaches frame N, as a decoder crash would; for testing capture supervision.
        crash_after: Option<u64>,
    },
}

impl SourceSpec {
    pub fn parse(uri: &str) -> Result<Self, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = uri.strip_prefix("synthetic://") {
            return parse_synthetic(uri, rest);
        }
        if let Some(rest) = uri.strip_prefix("v4l2://") {
            let device = if rest.chars().all(|c| c.is_ascii_digit()) && !rest.is_empty() {
                format!("/dev/video{rest}")
            } else {
                rest.to_owned()
            };
            if !device.starts_with('/') {
                return Err(invalid("use v4l2://<index> or v4l2:///dev/videoN"));
            }
            return Ok(Self::Device { device });
        }
        if uri.starts_with("/dev/video") {
            return Ok(Self::Device { device: uri.to_owned() });
        }
        if let Some(rest) = uri.strip_prefix("file://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(invalid("file:// needs a path"));
            }
            let mut looping = false;
            let mut fps = None;
            for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                match pair.split_once('=').unwrap_or((pair, "true")) {
                    ("loop", value) => {
                        looping = parse_flag(value).ok_or_else(|| invalid("loop must be true or false"))?
                    }
                    ("fps", value) => {
                        let parsed: f64 = value.parse().map_err(|_| invalid("fps must be a number"))?;
                        fps = Some(check_fps(parsed).map_err(|reason| invalid(&reason.to_string()))?);
                    }
                    (name, _) => return Err(invalid(&format!("unknown option `{name}` (loop, fps)"))),
                }
            }
            return Ok(Self::Path {
                path: PathBuf::from(path),
                looping,
                fps,
            });
        }
        let lower = uri.to_ascii_lowercase();
        if [
            "rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
        ]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
        {
            return Ok(Self::Network { url: uri.to_owned() });
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(invalid(&format!(
                "unknown scheme `{scheme}` (file, rtsp, rtsps, rtmp, http, https, v4l2, synthetic)"
            )));
        }
        if uri.is_empty() {
            return Err(invalid("empty"));
        }
        Ok(Self::Path {
            path: PathBuf::from(uri),
            looping: false,
            fps: None,
        })
    }

    /// Live sources deliver frames at their own pace and come back after an outage, so they
    /// are reconnected forever; files end.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Network { .. } | Self::Device { .. })
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A frame size or rate outside what framefleet accepts.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum OutOfRange {
    #[error("{name} {value} is outside 1–{MAX_DIMENSION}")]
    Dimension { name: &'static str, value: u32 },
    #[error("fps {0} is outside 0–1000")]
    Fps(f64),
}

fn check_fps(fps: f64) -> Result<f64, OutOfRange> {
    if fps.is_finite() && fps > 0.0 && fps <= 1000.0 {
        Ok(fps)
    } else {
        Err(OutOfRange::Fps(fps))
    }
}

/// Errors: a side of 0 or above [`MAX_DIMENSION`].
pub fn check_dimensions(width: u32, height: u32) -> Result<(), OutOfRange> {
    for (name, value) in [("width", width), ("height", height)] {
        if value == 0 || value > MAX_DIMENSION {
            return Err(OutOfRange::Dimension { name, value });
        }
    }
    Ok(())
}

/// `rest` is what follows `synthetic://` in `uri`.
fn parse_synthetic(uri: &str, rest: &str) -> Result<SourceSpec, SourceError> {
    let invalid = |reason: String| SourceError::InvalidUri {
        uri: uri.to_owned(),
        reason,
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut crash_after = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("crash_after", value)) => {
                crash_after = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| invalid(format!("crash_after `{value}` is not a frame count")))?,
                );
            }
            _ => return Err(invalid(format!("unknown option `{pair}` (crash_after=N)"))),
        }
    }
    let (size, fps) = match rest.split_once('@') {
        Some((size, fps)) => (
            size,
            fps.parse::<f64>()
                .map_err(|_| invalid(format!("fps `{fps}` is not a number")))?,
        ),
        None => (rest, FALLBACK_FPS),
    };
    let (width, height) = size
        .split_once(['x', 'X'])
        .ok_or_else(|| invalid("use synthetic://<width>x<height>[@fps], e.g. synthetic://640x480@25".to_owned()))?;
    let width: u32 = width
        .parse()
        .map_err(|_| invalid(format!("width `{width}` is not a number")))?;
    let height: u32 = height
        .parse()
        .map_err(|_| invalid(format!("height `{height}` is not a number")))?;
    check_dimensions(width, height).map_err(|reason| invalid(reason.to_string()))?;
    Ok(SourceSpec::Synthetic {
        width,
        height,
        fps: check_fps(fps).map_err(|reason| invalid(reason.to_string()))?,
        crash_after,
    })
}

/// Frames per second from timestamps in milliseconds, robust to a few odd intervals.
pub(super) fn median_rate(stamps_ms: &[f64]) -> Option<f64> {
    let mut intervals: Vec<f64> = stamps_ms
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .filter(|interval| interval.is_finite() && *interval > 0.0)
        .collect();
    if intervals.len() < 2 {
        return None;
    }
    intervals.sort_by(f64::total_cmp);
    let median = intervals[intervals.len() / 2];
    let fps = 1000.0 / median;
    (fps > 0.0 && fps <= MAX_PLAUSIBLE_FPS).then_some(fps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_their_source() {
        assert_eq!(
            SourceSpec::parse("synthetic://640x480@30").expect("synthetic"),
            SourceSpec::Synthetic {
                width: 640,
                height: 480,
                fps: 30.0,
                crash_after: None,
            }
        );
        assert_eq!(
            SourceSpec::parse("synthetic://64x48@5?crash_after=10").expect("fault injection"),
            SourceSpec::Synthetic {
                width: 64,
                height: 48,
                fps: 5.0,
                crash_after: Some(10),
            }
        );
        assert!(SourceSpec::parse("synthetic://64x48?crash=1").is_err());
        assert!(matches!(
            SourceSpec::parse("rtsp://127.0.0.1:8554/cam").expect("rtsp"),
            SourceSpec::Network { .. }
        ));
        assert_eq!(
            SourceSpec::parse("v4l2://2").expect("v4l2"),
            SourceSpec::Device {
                device: "/dev/video2".into()
            }
        );
        assert_eq!(
            SourceSpec::parse("file:///v/a.avi?loop=true&fps=5").expect("file"),
            SourceSpec::Path {
                path: "/v/a.avi".into(),
                looping: true,
                fps: Some(5.0)
            }
        );
        // A plain path keeps a `?` as part of the name.
        assert_eq!(
            SourceSpec::parse("/v/what?.avi").expect("path"),
            SourceSpec::Path {
                path: "/v/what?.avi".into(),
                looping: false,
                fps: None
            }
        );
    }

    #[test]
    fn impossible_sizes_and_unknown_schemes_are_refused_with_the_reason() {
        for (uri, expected) in [
            ("synthetic://0x480", "width 0"),
            ("synthetic://100000x480", "width 100000"),
            ("synthetic://640x480@0", "fps 0"),
            ("synthetic://640", "synthetic://<width>x<height>"),
            ("gopher://cam", "unknown scheme `gopher`"),
            ("file:///a.avi?speed=2", "unknown option `speed`"),
        ] {
            let error = SourceSpec::parse(uri).expect_err(uri).to_string();
            assert!(error.contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn a_rate_is_derived_from_timestamps_and_odd_intervals_do_not_move_it() {
        let stamps: Vec<f64> = (0..30).map(|n| f64::from(n) * 40.0).collect();
        assert_eq!(median_rate(&stamps), Some(25.0));
        // A 1 ms-timebase file at 30 frames/s: intervals of 33 and 34 ms, and one long gap.
        let mut stamps: Vec<f64> = (0..30).map(|n| (f64::from(n) * 1000.0 / 30.0).round()).collect();
        stamps[20] += 500.0;
        let fps = median_rate(&stamps).expect("a rate");
        assert!((29.0..=31.0).contains(&fps), "{fps}");
        assert_eq!(median_rate(&[0.0, 0.0, 0.0]), None, "no usable timestamps");
        assert_eq!(
            median_rate(&[0.0, 1.0, 2.0, 3.0]),
            None,
            "1000 frames/s is not plausible"
        );
    }
}
