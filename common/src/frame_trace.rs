//! One frame = one trace. The ingestor opens the frame's root span (`ingest_frame`, from
//! capture until Kafka acknowledged every copy) with children `capture` (capture → handed to
//! the producer: encode and queueing) and `produce` (send → acknowledged). Its W3C
//! `traceparent` travels in the frame's record header; the worker continues the trace with
//! `process_frame` (consumed → its result or dead letter acknowledged) and the children
//! `decode`, `compute` and `write_result`.
//!
//! Spans are built after the fact with the timestamps each stage recorded, through the
//! OpenTelemetry API (the global tracer [`crate::telemetry::init`] installs): a frame's life
//! crosses tasks, threads and batches, which scoped `tracing` spans cannot follow. Attribute
//! names follow the OpenTelemetry messaging semantic conventions (`messaging.*`).
//!
//! Without an OTLP endpoint nothing is built: [`IngestSpan::traceparent`] is then a fresh
//! random id, so a frame's records can still be correlated across topics.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TRACER: &str = "framefleet";
const TRACEPARENT: &str = "traceparent";

/// Unix µs as a `SystemTime` (negative values clamp to the epoch).
pub fn unix_us(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// The ingestor's spans of one frame, open from capture until its delivery is settled.
pub struct IngestSpan {
    /// The root span in its context; `None` when traces are not exported.
    context: Option<Context>,
    traceparent: String,
}

impl IngestSpan {
    /// Opens the frame's root span, started at `capture_time_us` (unix µs).
    pub fn start(channel_id: &str, sequence: u64, capture_time_us: i64, topics: &[String]) -> Self {
        if !crate::telemetry::exporting() {
            return Self {
                context: None,
                traceparent: random_traceparent(),
            };
        }
        let tracer = global::tracer(TRACER);
        let root = tracer
            .span_builder("ingest_frame")
            .with_kind(SpanKind::Producer)
            .with_start_time(unix_us(capture_time_us))
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", topics.join(",")),
                KeyValue::new("framefleet.channel_id", channel_id.to_owned()),
                KeyValue::new("framefleet.sequence", i64::try_from(sequence).unwrap_or(i64::MAX)),
            ])
            .start_with_context(&tracer, &Context::new());
        let context = Context::new().with_span(root);
        let traceparent = inject(&context).unwrap_or_else(random_traceparent);
        Self {
            context: Some(context),
            traceparent,
        }
    }

    /// The `traceparent` header value every copy of the frame carries.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// Closes the spans: sent to Kafka at `sent`, settled at `settled` (acknowledged, or
    /// failed with `failure`).
    pub fn end(self, capture_time_us: i64, sent: SystemTime, settled: SystemTime, failure: Option<&str>) {
        let Some(context) = self.context else {
            return;
        };
        let tracer = global::tracer(TRACER);
        child(
            &tracer,
            &context,
            "capture",
            unix_us(capture_time_us),
            sent,
            SpanKind::Internal,
        );
        let produce = tracer
            .span_builder("produce")
            .with_kind(SpanKind::Producer)
            .with_start_time(sent)
            .start_with_context(&tracer, &context);
        let produce_context = Context::new().with_span(produce);
        let root = context.span();
        if let Some(failure) = failure {
            produce_context.span().set_status(Status::error(failure.to_owned()));
            root.set_status(Status::error(failure.to_owned()));
        }
        produce_context.span().end_with_timestamp(settled);
        root.end_with_timestamp(settled);
    }
}

/// What the worker knows of one consumed frame once its outcome was acknowledged.
pub struct ProcessedFrame<'a> {
    pub traceparent: Option<&'a str>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Unix µs: taken from the consumer; its batch's compute started; its outcome was ready.
    pub consumed_us: i64,
    pub compute_started_us: i64,
    pub computed_us: i64,
    /// Time spent decoding this frame, µs (part of its batch's compute).
    pub decode_us: u64,
    /// Frames computed together with this one.
    pub batch_size: usize,
    /// Set for a dead-lettered frame: its `DeadLetterCode` name.
    pub dead_letter_code: Option<&'a str>,
}

/// Records the worker's spans of each frame as children of the trace its `traceparent`
/// names (a frame without one starts a trace of its own). `acknowledged` is when Kafka
/// acknowledged the batch's outcomes.
pub fn record_processed(frames: &[ProcessedFrame<'_>], acknowledged: SystemTime) {
    if !crate::telemetry::exporting() {
        return;
    }
    let tracer = global::tracer(TRACER);
    let propagator = TraceContextPropagator::new();
    for frame in frames {
        let parent = propagator.extract(&OneHeader(frame.traceparent));
        let span = tracer
            .span_builder("process_frame")
            .with_kind(SpanKind::Consumer)
            .with_start_time(unix_us(frame.consumed_us))
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", frame.topic.to_owned()),
                KeyValue::new("messaging.destination.partition.id", frame.partition.to_string()),
                KeyValue::new("messaging.kafka.offset", frame.offset),
                KeyValue::new(
                    "framefleet.batch_size",
                    i64::try_from(frame.batch_size).unwrap_or(i64::MAX),
                ),
            ])
            .start_with_context(&tracer, &parent);
        let context = Context::new().with_span(span);
        let compute_started = unix_us(frame.compute_started_us);
        let computed = unix_us(frame.computed_us);
        // Frames of a batch are decoded in parallel at its start.
        let decoded = compute_started + Duration::from_micros(frame.decode_us);
        child(
            &tracer,
            &context,
            "decode",
            compute_started,
            decoded,
            SpanKind::Internal,
        );
        child(
            &tracer,
            &context,
            "compute",
            compute_started,
            computed,
            SpanKind::Internal,
        );
        child(
            &tracer,
            &context,
            "write_result",
            computed,
            acknowledged,
            SpanKind::Producer,
        );
        let root = context.span();
        if let Some(code) = frame.dead_letter_code {
            root.set_attribute(KeyValue::new("framefleet.dead_letter_code", code.to_owned()));
            root.set_status(Status::error(Cow::Owned(format!("dead-lettered: {code}"))));
        }
        root.end_with_timestamp(acknowledged);
    }
}

fn child(
    tracer: &global::BoxedTracer,
    parent: &Context,
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    kind: SpanKind,
) {
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(start)
        .start_with_context(tracer, parent);
    Context::new().with_span(span).span().end_with_timestamp(end.max(start));
}

/// The `traceparent` of the span in `context`, if it is valid.
fn inject(context: &Context) -> Option<String> {
    struct Capture(Option<String>);
    impl Injector for Capture {
        fn set(&mut self, key: &str, value: String) {
            if key == TRACEPARENT {
                self.0 = Some(value);
            }
        }
    }
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut capture = Capture(None);
    TraceContextPropagator::new().inject_context(context, &mut capture);
    capture.0
}

struct OneHeader<'a>(Option<&'a str>);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// A W3C `traceparent` with fresh random ids, not sampled.
pub fn random_traceparent() -> String {
    let trace_id: u128 = rand::random::<u128>().max(1);
    let span_id: u64 = rand::random::<u64>().max(1);
    format!("00-{trace_id:032x}-{span_id:016x}-00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_is_read_back_as_the_parent() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = TraceContextPropagator::new().extract(&OneHeader(Some(header)));
        let span_context = parent.span().span_context().clone();
        assert_eq!(span_context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span_context.span_id().to_string(), "b7ad6b7169203331");
        assert!(span_context.is_sampled() && span_context.is_remote());
        assert_eq!(inject(&parent).as_deref(), Some(header), "and written back unchanged");
    }

    #[test]
    fn a_missing_or_garbled_traceparent_gives_no_parent() {
        for header in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        ] {
            let parent = TraceContextPropagator::new().extract(&OneHeader(header));
            assert!(!parent.span().span_context().is_valid(), "{header:?}");
        }
    }

    #[test]
    fn random_traceparents_are_well_formed_and_distinct() {
        let (a, b) = (random_traceparent(), random_traceparent());
        assert_ne!(a, b);
        let parent = TraceContextPropagator::new().extract(&OneHeader(Some(&a)));
        assert!(parent.span().span_context().is_valid(), "{a}");
    }
}
