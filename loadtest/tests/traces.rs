//! One frame = one trace, across processes: an ingestor and a worker (each its own process,
//! exporting over OTLP/gRPC as in production) send their spans to an OTLP receiver built here
//! from `opentelemetry-proto`'s tonic server, and every frame's trace holds the ingestor's
//! spans and the worker's, linked parent to child, in time order.

use framefleet_loadtest::{Fleet, header_value};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FRAMES: usize = 20;

#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    start_ns: u64,
    end_ns: u64,
}

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.spans.lock().expect("spans");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .and_then(|value| match &value.value {
                    Some(Value::StringValue(name)) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id.iter().map(|byte| format!("{byte:02x}")).collect(),
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_receiver() -> (String, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{address}"), receiver)
}

fn exporting(program: &str, args: &[String], endpoint: &str) -> tokio::process::Command {
    let binary = framefleet_common::startup::sibling_binary(program).expect("a binary of this build");
    let mut command = tokio::process::Command::new(binary);
    command
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The one span of `trace` named `name` from `service`.
fn one<'a>(trace: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|span| span.service == service && span.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one `{name}` span from {service}: {trace:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_ingestor_and_the_worker() {
    let (endpoint, receiver) = start_receiver().await;
    let fleet = Fleet::start("traces").await.expect("start the coordinator");
    let worker_args: Vec<String> = fleet
        .worker_args("worker-traced", &[])
        .into_iter()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let mut worker = exporting("framefleet-worker", &worker_args, &endpoint)
        .spawn()
        .expect("start the worker");

    let channel = fleet.names.channel_id("traced");
    let frames = FRAMES.to_string();
    let ingestor_args: Vec<String> = fleet
        .ingestor_args(
            "ingestor-traced",
            &[(&channel, "synthetic://64x48@30")],
            &["--max-frames", &frames],
        )
        .into_iter()
        .skip(1)
        .collect();
    let ingested = tokio::time::timeout(
        Duration::from_secs(60),
        exporting("framefleet-ingestor", &ingestor_args, &endpoint).status(),
    )
    .await
    .expect("the ingestor finishes")
    .expect("run the ingestor");
    assert!(ingested.success(), "ingestor: {ingested}");

    let results = fleet
        .read_result_records(FRAMES, Duration::from_secs(60), Duration::from_millis(500))
        .await
        .expect("every frame's result");
    // SIGTERM: the worker drains, and its telemetry flushes on the way out.
    let pid = worker.id().expect("the worker's pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exited = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker stops on SIGTERM")
        .expect("wait");
    assert!(exited.success(), "worker: {exited}");

    let spans = receiver.spans.lock().expect("spans").clone();
    let mut traces: HashMap<&str, Vec<ReceivedSpan>> = HashMap::new();
    for span in &spans {
        traces.entry(span.trace_id.as_str()).or_default().push(span.clone());
    }
    assert_eq!(results.len(), FRAMES);
    for (record, result) in &results {
        // The result record carries the frame's traceparent: 00-<trace id>-<span id>-<flags>.
        let traceparent =
            std::str::from_utf8(header_value(record, "traceparent").expect("traceparent on the result")).expect("text");
        let trace_id = traceparent.split('-').nth(1).expect("trace id");
        let trace = traces
            .get(trace_id)
            .unwrap_or_else(|| panic!("no spans for frame {} (trace {trace_id})", result.sequence));
        let ingest = one(trace, "framefleet-ingestor", "ingest_frame");
        let capture = one(trace, "framefleet-ingestor", "capture");
        let produce = one(trace, "framefleet-ingestor", "produce");
        let process = one(trace, "framefleet-worker", "process_frame");
        let decode = one(trace, "framefleet-worker", "decode");
        let compute = one(trace, "framefleet-worker", "compute");
        let write = one(trace, "framefleet-worker", "write_result");
        assert!(ingest.parent_span_id.is_empty(), "the ingestor's span is the root");
        for child in [capture, produce] {
            assert_eq!(child.parent_span_id, ingest.span_id, "{}", child.name);
        }
        assert_eq!(
            process.parent_span_id, ingest.span_id,
            "the worker continues the ingestor's span"
        );
        for child in [decode, compute, write] {
            assert_eq!(child.parent_span_id, process.span_id, "{}", child.name);
        }
        // In time order: captured, sent, acknowledged; consumed, computed, result written.
        assert!(ingest.start_ns <= capture.end_ns && capture.end_ns <= produce.start_ns + 1_000);
        assert!(produce.end_ns <= ingest.end_ns && ingest.start_ns < process.start_ns);
        assert!(compute.end_ns <= write.start_ns + 1_000 && write.end_ns <= process.end_ns + 1_000);
        assert!(
            process.start_ns <= compute.start_ns + 1_000,
            "consumed before computed: {process:?} {compute:?}"
        );
    }
    fleet.stop().await.expect("stop");
}
