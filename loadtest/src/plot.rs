//! PNG figures of a load run (plotters, bitmap backend). Text is drawn with a TrueType font
//! read at run time (DejaVu Sans from Debian's fonts-dejavu-core, which scripts/setup.sh
//! installs), because plotters' own font lookup needs fontconfig and FreeType.

use crate::baseline::BaselineRun;
use crate::experiment::{LagRun, ScalingRun};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const FONT: &str = "sans-serif";
const SERIES_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// A value of each sample, and of each system, to draw as one series or bar.
type SampleValue = fn(&crate::experiment::Sample) -> u64;
type ConsumerValue = fn(&crate::baseline::ConsumerRun) -> f64;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "no TrueType font for the plots: install fonts-dejavu-core (scripts/setup.sh does) or set FRAMEFLEET_PLOT_FONT to a .ttf file"
    )]
    NoFont,
    #[error("cannot draw {path}: {reason}")]
    Draw { path: String, reason: String },
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        let candidates = std::env::var("FRAMEFLEET_PLOT_FONT")
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(|path| (*path).to_owned()));
        for candidate in candidates {
            if let Ok(bytes) = std::fs::read(&candidate) {
                // plotters keeps registered fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    });
    if *registered { Ok(()) } else { Err(PlotError::NoFont) }
}

/// Every figure: a white canvas of `size`, the machine label in a 30-pixel strip at the
/// bottom, and `paint` drawing into the rest.
fn draw(
    path: &Path,
    size: (u32, u32),
    machine: &str,
    paint: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> Result<(), PlotError> {
    const FOOTER_PIXELS: u32 = 30;
    register_font()?;
    let failed = |reason: String| PlotError::Draw {
        path: path.display().to_string(),
        reason,
    };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|error| failed(error.to_string()))?;
    let (charts, footer) = root.split_vertically(size.1.saturating_sub(FOOTER_PIXELS));
    footer
        .draw(&Text::new(
            machine.to_owned(),
            (10, 8),
            (FONT, 13).into_font().color(&BLACK.mix(0.6)),
        ))
        .map_err(|error| failed(error.to_string()))?;
    paint(&charts).map_err(|error| failed(format!("{error:#}")))?;
    root.present().map_err(|error| failed(error.to_string()))
}

/// The series legend, in the same style on every figure.
fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

fn nice_max(value: f64) -> f64 {
    if value <= 0.0 { 1.0 } else { value * 1.08 }
}

/// The paper's figure for one scenario: accumulate, consume and lag against time, with the
/// end of generation marked.
pub fn lag_figure(run: &LagRun, machine: &str, path: &Path) -> Result<(), PlotError> {
    draw(path, (1000, 620), machine, |upper| {
        let end = run.samples.last().map_or(1.0, |sample| sample.elapsed_s).max(1.0) * 1.02;
        let top = nice_max(run.samples.iter().map(|sample| sample.accumulate).max().unwrap_or(0) as f64);
        let mut chart = ChartBuilder::on(upper)
            .caption(format!("{}: {} ({})", run.name, run.title, run.cameras), (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the cameras started")
            .y_desc("frames")
            .label_style((FONT, 14))
            .draw()?;
        let series: [(&str, RGBColor, SampleValue); 3] = [
            ("accumulate (written to Kafka)", SERIES_COLOURS[0], |sample| {
                sample.accumulate
            }),
            ("consume (committed by the workers)", SERIES_COLOURS[2], |sample| {
                sample.consume
            }),
            ("lag", SERIES_COLOURS[1], |sample| sample.lag),
        ];
        for (label, colour, value) in series {
            chart
                .draw_series(LineSeries::new(
                    run.samples
                        .iter()
                        .map(|sample| (sample.elapsed_s, value(sample) as f64)),
                    colour.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
        }
        chart
            .draw_series(DashedLineSeries::new(
                [(run.generation_ended_s, 0.0), (run.generation_ended_s, top)],
                6,
                4,
                BLACK.mix(0.5).stroke_width(1),
            ))?
            .label("cameras stop")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.mix(0.5)));
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;
        Ok(())
    })
}

/// The lag scenarios side by side: lag (top) and consume (bottom) against time.
pub fn lag_overlay_figure(runs: &[&LagRun], machine: &str, path: &Path) -> Result<(), PlotError> {
    draw(path, (1000, 900), machine, |charts| {
        let (top_area, bottom_area) = charts.split_vertically(435);
        let end = runs
            .iter()
            .filter_map(|run| run.samples.last())
            .map(|sample| sample.elapsed_s)
            .fold(1.0, f64::max)
            * 1.02;
        let panels: [(&DrawingArea<_, _>, &str, SampleValue); 2] = [
            (&top_area, "lag (frames written, not yet consumed)", |sample| sample.lag),
            (&bottom_area, "consume (frames committed by the workers)", |sample| {
                sample.consume
            }),
        ];
        for (area, title, value) in panels {
            let top = nice_max(
                runs.iter()
                    .flat_map(|run| run.samples.iter())
                    .map(value)
                    .max()
                    .unwrap_or(0) as f64,
            );
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..end, 0.0..top)?;
            chart
                .configure_mesh()
                .x_desc("seconds since the cameras started")
                .y_desc("frames")
                .label_style((FONT, 13))
                .draw()?;
            for (index, run) in runs.iter().enumerate() {
                let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(
                        run.samples
                            .iter()
                            .map(|sample| (sample.elapsed_s, value(sample) as f64)),
                        colour.stroke_width(2),
                    ))?
                    .label(format!("{} ({})", run.title, run.cameras))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
        }
        Ok(())
    })
}

/// End-to-end latency histograms, one row per lag scenario, percentiles in the captions.
pub fn latency_figure(runs: &[&LagRun], machine: &str, path: &Path) -> Result<(), PlotError> {
    let rows = runs.len().max(1);
    draw(path, (1000, 60 + 280 * rows as u32), machine, |charts| {
        let areas = charts.split_evenly((rows, 1));
        for ((area, run), colour) in areas.iter().zip(runs).zip(SERIES_COLOURS.iter().cycle()) {
            let latency = &run.latency;
            let samples_s: Vec<f64> = latency.samples_ms.iter().map(|ms| ms / 1000.0).collect();
            // Up to the 99.5th percentile, so one straggler does not squash the histogram.
            let upper = samples_s
                .get(((samples_s.len() as f64 * 0.995) as usize).min(samples_s.len().saturating_sub(1)))
                .copied()
                .unwrap_or(1.0)
                .max(0.01);
            const BINS: usize = 50;
            let width = upper / BINS as f64;
            let mut counts = [0u32; BINS];
            for sample in &samples_s {
                let bin = ((sample / width) as usize).min(BINS - 1);
                counts[bin] += 1;
            }
            let tallest = f64::from(counts.iter().copied().max().unwrap_or(0));
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{}: p50 {:.2} s, p95 {:.2} s, p99 {:.2} s ({} frames)",
                        run.title,
                        latency.p50_ms / 1000.0,
                        latency.p95_ms / 1000.0,
                        latency.p99_ms / 1000.0,
                        latency.count
                    ),
                    (FONT, 17),
                )
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..upper, 0.0..nice_max(tallest))?;
            chart
                .configure_mesh()
                .x_desc("seconds from capture to result")
                .y_desc("frames")
                .label_style((FONT, 12))
                .draw()?;
            chart.draw_series(counts.iter().enumerate().map(|(bin, &count)| {
                let left = bin as f64 * width;
                Rectangle::new(
                    [(left, 0.0), (left + width, f64::from(count))],
                    colour.mix(0.8).filled(),
                )
            }))?;
        }
        Ok(())
    })
}

/// Consume rate against workers, with the linear line through the first point.
pub fn scaling_figure(run: &ScalingRun, machine: &str, path: &Path) -> Result<(), PlotError> {
    draw(path, (900, 560), machine, |upper| {
        let most_workers = run.points.iter().map(|point| point.workers).max().unwrap_or(1);
        let per_worker = run
            .points
            .first()
            .map_or(0.0, |first| first.frames_per_second / f64::from(first.workers));
        let linear_top = per_worker * f64::from(most_workers);
        let top = nice_max(
            run.points
                .iter()
                .map(|point| point.frames_per_second)
                .fold(linear_top, f64::max),
        );
        let mut chart = ChartBuilder::on(upper)
            .caption(format!("{}: {} ({})", run.name, run.title, run.cameras), (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..f64::from(most_workers) + 0.5, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("workers")
            .y_desc("frames consumed per second")
            .label_style((FONT, 14))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (f64::from(most_workers), linear_top)],
                8,
                5,
                BLACK.mix(0.5).stroke_width(1),
            ))?
            .label("linear from 1 worker")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.mix(0.5)));
        let colour = SERIES_COLOURS[0];
        chart
            .draw_series(LineSeries::new(
                run.points
                    .iter()
                    .map(|point| (f64::from(point.workers), point.frames_per_second)),
                colour.stroke_width(2),
            ))?
            .label("measured")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
        chart.draw_series(
            run.points
                .iter()
                .map(|point| Circle::new((f64::from(point.workers), point.frames_per_second), 5, colour.filled())),
        )?;
        chart.draw_series(run.points.iter().map(|point| {
            Text::new(
                format!("{:.0}/s, {:.0} %", point.frames_per_second, point.efficiency * 100.0),
                (f64::from(point.workers) + 0.08, point.frames_per_second),
                (FONT, 14),
            )
        }))?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;
        Ok(())
    })
}

/// framefleet and the two baselines: frames/s end to end and bytes per frame.
pub fn baselines_figure(run: &BaselineRun, machine: &str, path: &Path) -> Result<(), PlotError> {
    draw(path, (1000, 480), machine, |charts| {
        let (left, right) = charts.split_horizontally(500);
        let systems = run.consumers();
        let panels: [(&DrawingArea<_, _>, &str, ConsumerValue, usize); 2] = [
            (
                &left,
                "frames per second on one core",
                |system| system.frames_per_second,
                0,
            ),
            (&right, "CPU ms per frame", |system| system.cpu_ms_per_frame, 2),
        ];
        for (area, title, value, decimals) in panels {
            let top = nice_max(systems.iter().map(|system| value(system)).fold(0.0, f64::max));
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{title} ({} frames)", run.frames), (FONT, 16))
                .margin(12)
                .x_label_area_size(34)
                .y_label_area_size(80)
                .build_cartesian_2d((0..systems.len() - 1).into_segmented(), 0.0..top * 1.1)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|segment| match segment {
                    SegmentValue::CenterOf(index) => systems
                        .get(*index)
                        .map_or(String::new(), |system| system.system.to_owned()),
                    _ => String::new(),
                })
                .label_style((FONT, 13))
                .draw()?;
            for (index, system) in systems.iter().enumerate() {
                let colour = SERIES_COLOURS[index];
                chart.draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(index), 0.0),
                        (SegmentValue::Exact(index + 1), value(system)),
                    ],
                    colour.mix(0.8).filled(),
                )))?;
                chart.draw_series(std::iter::once(Text::new(
                    format!("{:.decimals$}", value(system)),
                    (SegmentValue::CenterOf(index), value(system) + top * 0.03),
                    (FONT, 14),
                )))?;
            }
        }
        Ok(())
    })
}
