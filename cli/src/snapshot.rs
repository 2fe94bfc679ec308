//! `framefleet snapshot CHANNEL --out FILE.png`: a channel's latest frame with what the
//! detector found in it, read back from Kafka — the results topic for the latest result with
//! detections (or the latest result, if none has any), the channel's topic for that frame —
//! and drawn as a PNG with one box per detection. Prints the channel's detection tally too.

use anyhow::Context;
use framefleet_common::kafka::KafkaConnection;
use framefleet_proto::wire::FrameResult;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::path::Path;
use std::time::{Duration, Instant};

/// Box outline colour and width in pixels.
const BOX_RGB: [u8; 3] = [255, 40, 40];
const BOX_WIDTH: usize = 3;

#[derive(Debug, Default)]
struct Tally {
    results: u64,
    detector_ran: u64,
    gated: u64,
    objects: std::collections::BTreeMap<String, u64>,
    latest: Option<FrameResult>,
    latest_with_detections: Option<FrameResult>,
}

/// Writes the snapshot of `channel_id` to `out`; returns the line to print.
pub fn snapshot(
    kafka: &KafkaConnection,
    results_topic: &str,
    channel_id: &str,
    out: &Path,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut tally = Tally::default();
    framefleet_common::audit::read_topic(kafka, results_topic, deadline, timeout, |record| {
        if record.key() != Some(channel_id.as_bytes()) {
            return;
        }
        let Some(Ok(result)) = record.payload().map(serde_json::from_slice::<FrameResult>) else {
            return;
        };
        tally.results += 1;
        tally.detector_ran += u64::from(result.detector_ran);
        tally.gated += u64::from(result.gated);
        for object in &result.detections {
            *tally.objects.entry(object.label.clone()).or_default() += 1;
        }
        if !result.detections.is_empty() {
            tally.latest_with_detections = Some(result.clone());
        }
        tally.latest = Some(result);
    })
    .with_context(|| format!("cannot read {results_topic}"))?;
    let Some(shown) = tally.latest_with_detections.take().or(tally.latest.take()) else {
        anyhow::bail!("{results_topic} holds no result of channel `{channel_id}`");
    };
    let payload = fetch_frame(kafka, &shown, deadline)?;
    let (width, height, mut pixels) = decode(&payload)?;
    for object in &shown.detections {
        draw_box(&mut pixels, width, height, object.box_pixels);
    }
    let options = zune_core::options::EncoderOptions::new(
        width,
        height,
        zune_core::colorspace::ColorSpace::RGB,
        zune_core::bit_depth::BitDepth::Eight,
    );
    let png = zune_png::PngEncoder::new(&pixels, options).encode();
    std::fs::write(out, png).with_context(|| format!("cannot write {}", out.display()))?;
    let objects = if tally.objects.is_empty() {
        "no detections".to_owned()
    } else {
        tally
            .objects
            .iter()
            .map(|(label, count)| format!("{count} {label}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(format!(
        "{channel_id}: {} results, detector ran on {}, gated {}; {objects}; frame {} ({} detections) drawn to {}",
        tally.results,
        tally.detector_ran,
        tally.gated,
        shown.sequence,
        shown.detections.len(),
        out.display()
    ))
}

/// The frame record a result came from.
fn fetch_frame(kafka: &KafkaConnection, result: &FrameResult, deadline: Instant) -> anyhow::Result<Vec<u8>> {
    let consumer: BaseConsumer = framefleet_common::kafka::base_config(kafka)
        .set("group.id", "framefleet-snapshot")
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", "67108864")
        .set("fetch.max.bytes", "67108864")
        .create()
        .context("cannot create a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(
        &result.source_topic,
        result.source_partition,
        Offset::Offset(result.source_offset),
    )?;
    consumer.assign(&assignment)?;
    while Instant::now() < deadline {
        if let Some(record) = consumer.poll(Duration::from_millis(200)) {
            let record = record.context("reading the frame")?;
            if record.offset() == result.source_offset {
                return Ok(record.payload().unwrap_or_default().to_vec());
            }
        }
    }
    anyhow::bail!(
        "frame {}[{}]@{} was not read in time (deleted by retention?)",
        result.source_topic,
        result.source_partition,
        result.source_offset
    )
}

/// A JPEG frame as RGB.
fn decode(payload: &[u8]) -> anyhow::Result<(usize, usize, Vec<u8>)> {
    let image = turbojpeg::decompress(payload, turbojpeg::PixelFormat::RGB)
        .context("the frame is not a JPEG (snapshots draw JPEG frames)")?;
    let mut pixels = Vec::with_capacity(image.width * image.height * 3);
    for row in image.pixels.chunks(image.pitch).take(image.height) {
        pixels.extend_from_slice(&row[..image.width * 3]);
    }
    Ok((image.width, image.height, pixels))
}

/// Outlines `[x1, y1, x2, y2]` (pixels, clipped to the image).
fn draw_box(pixels: &mut [u8], width: usize, height: usize, [x1, y1, x2, y2]: [f32; 4]) {
    if width == 0 || height == 0 {
        return;
    }
    let clip = |value: f32, limit: usize| (value.max(0.0) as usize).min(limit - 1);
    let (left, right) = (clip(x1, width), clip(x2, width));
    let (top, bottom) = (clip(y1, height), clip(y2, height));
    let mut paint = |x: usize, y: usize| {
        let at = (y * width + x) * 3;
        pixels[at..at + 3].copy_from_slice(&BOX_RGB);
    };
    for offset in 0..BOX_WIDTH {
        for x in left..=right {
            paint(x, (top + offset).min(bottom));
            paint(x, bottom.saturating_sub(offset).max(top));
        }
        for y in top..=bottom {
            paint((left + offset).min(right), y);
            paint(right.saturating_sub(offset).max(left), y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_outlined_and_clipped() {
        let (width, height) = (10, 8);
        let mut pixels = vec![0u8; width * height * 3];
        draw_box(&mut pixels, width, height, [2.0, 1.0, 7.0, 6.0]);
        let at = |pixels: &[u8], x: usize, y: usize| pixels[(y * width + x) * 3];
        assert_eq!(at(&pixels, 2, 1), 255);
        assert_eq!(at(&pixels, 7, 6), 255);
        assert_eq!(at(&pixels, 0, 0), 0, "outside the box");
        // Far outside the image: clipped, no panic.
        draw_box(&mut pixels, width, height, [-5.0, -5.0, 50.0, 50.0]);
        assert_eq!(at(&pixels, 9, 7), 255);
    }
}
