//! One capture process per channel, so that a decoder crash costs one channel, not the
//! ingestor. OpenCV's FFmpeg reader can segfault on real inputs (a video whose chroma
//! subsampling changes mid-stream crashes libswscale in OpenCV 4.6); with capture threads in
//! one process, every channel of the ingestor died with it. Frigate isolates its cameras the
//! same way, with one FFmpeg process each.
//!
//! The ingestor runs itself as `framefleet-ingestor capture-child`: the child reads a
//! [`CaptureRequest`] (one JSON line) from stdin, opens the source, captures and encodes
//! exactly as a capture thread would ([`crate::capture::capture_loop`]), and writes frames and
//! its source ledger to stdout. The parent puts the frames in the channel's queue (so the
//! queue policy, sequence numbers and delivery are unchanged) and adopts the ledger. Closing
//! the child's stdin asks it to stop; a child that dies by a signal or an error exit is a
//! crash: counted in the ledger's `capture_crashes`, reported in `last_error` with the
//! signal, and the channel restarted (live sources) or failed (files, which would otherwise
//! be replayed from the start).
//!
//! Wire format child → parent, little-endian: `F` i64 capture time (µs) u32 length, payload;
//! `L` u32 length, a protobuf `ChannelLedger` of the child's source-side counts.

use crate::capture::{self, CaptureJob, CaptureOptions, EncodedFrame, Pace};
use crate::encode::{FrameEncoder, Quality};
use crate::ledger::{ChannelLedger, SourceState};
use crate::queue::{FrameQueue, Pushed, QueuePolicy};
use crate::source::SourceSpec;
use framefleet_proto::v1::{self, FrameSchema};
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The first argument that makes the ingestor binary a capture child.
pub const CHILD_COMMAND: &str = "capture-child";
/// Overrides where the ingestor binary is found (for embedding the ingestor in a program).
pub const INGESTOR_BINARY_ENV: &str = "FRAMEFLEET_INGESTOR_BIN";
const FRAME_TAG: u8 = b'F';
const LEDGER_TAG: u8 = b'L';
/// How often the child reports its source ledger while frames flow.
const LEDGER_INTERVAL: Duration = Duration::from_millis(250);
/// How long a child may take to stop after its stdin closed before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The largest message the parent accepts from a child (a frame is bounded far below this).
const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Everything a capture child needs to capture one channel.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaptureRequest {
    pub channel_id: String,
    pub source_uri: String,
    /// The channel schema's fields (the encoder's target).
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub pixel_format: i32,
    pub encoding: i32,
    pub fps: f64,
    pub jpeg_quality: u8,
    pub png_compression: u8,
    pub realtime: bool,
    pub max_frames: Option<u64>,
    pub stall_timeout_ms: u64,
    pub max_backoff_ms: u64,
    pub retry_files: bool,
}

impl CaptureRequest {
    pub fn new(
        channel_id: &str,
        source_uri: &str,
        schema: &FrameSchema,
        quality: Quality,
        options: &CaptureOptions,
    ) -> Self {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self {
            channel_id: channel_id.to_owned(),
            source_uri: source_uri.to_owned(),
            width: schema.width,
            height: schema.height,
            channels: schema.channels,
            pixel_format: schema.pixel_format,
            encoding: schema.encoding,
            fps: schema.fps,
            jpeg_quality: quality.jpeg,
            png_compression: quality.png_compression,
            realtime: options.pace == Pace::Realtime,
            max_frames: options.max_frames,
            stall_timeout_ms: millis(options.stall_timeout),
            max_backoff_ms: millis(options.max_backoff),
            retry_files: options.retry_files,
        }
    }

    fn schema(&self) -> FrameSchema {
        FrameSchema {
            version: 1,
            width: self.width,
            height: self.height,
            channels: self.channels,
            pixel_format: self.pixel_format,
            encoding: self.encoding,
            fps: self.fps,
        }
    }

    fn options(&self) -> CaptureOptions {
        CaptureOptions {
            pace: if self.realtime { Pace::Realtime } else { Pace::Max },
            max_frames: self.max_frames,
            stall_timeout: Duration::from_millis(self.stall_timeout_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            retry_files: self.retry_files,
        }
    }
}

/// The ingestor binary to run capture children from: `$FRAMEFLEET_INGESTOR_BIN`, this
/// program when it is the ingestor, or the ingestor beside this program (a test or load-test
/// binary of the same build). `None`: captures run as threads of this process.
pub fn ingestor_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(INGESTOR_BINARY_ENV) {
        return Some(PathBuf::from(path));
    }
    let this = std::env::current_exe().ok()?;
    if this.file_name().is_some_and(|name| name == "framefleet-ingestor") {
        return Some(this);
    }
    framefleet_common::startup::sibling_binary("framefleet-ingestor")
}

/// The child's `main`: captures the channel `stdin`'s first line asks for until the source
/// ends or stdin closes, writing frames and ledgers to stdout. Exit status 0 when the capture
/// ended by itself or was stopped, 2 for an unusable request, 3 when the parent went away.
pub fn child_main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: capture child: cannot start: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    // Logs go to the inherited stderr, beside the parent's.
    let _telemetry = runtime.block_on(async { framefleet_common::telemetry::init("framefleet-ingestor") });
    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    let request: CaptureRequest = match stdin.read_line(&mut line).map(|_| serde_json::from_str(&line)) {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            eprintln!("error: capture child: bad request: {error}");
            return std::process::ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("error: capture child: cannot read the request: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let stop = CancellationToken::new();
    // Anything more on stdin, or its end (the parent closed it or died), means stop.
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut byte = [0_u8; 1];
            let _ = stdin.read(&mut byte);
            stop.cancel();
        });
    }
    match run_child(&request, stop, &runtime) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The parent stopped reading: it is gone or stopping us.
            tracing::debug!(%error, "capture child: parent went away");
            std::process::ExitCode::from(3)
        }
    }
}

fn run_child(
    request: &CaptureRequest,
    stop: CancellationToken,
    runtime: &tokio::runtime::Runtime,
) -> std::io::Result<()> {
    let ledger = Arc::new(ChannelLedger::new(&request.channel_id));
    let spec = SourceSpec::parse(&request.source_uri).map_err(std::io::Error::other);
    let encoder = FrameEncoder::new(
        &request.schema(),
        Quality {
            jpeg: request.jpeg_quality,
            png_compression: request.png_compression,
        },
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (spec, encoder) = match (spec, encoder) {
        (Ok(spec), Ok(encoder)) => (spec, encoder),
        (Err(error), _) => return fail_child(&ledger, &mut out, error.to_string()),
        (_, Err(error)) => return fail_child(&ledger, &mut out, format!("channel `{}`: {error}", request.channel_id)),
    };
    // One frame of slack: the pipe to the parent is the queue, and the parent's queue policy
    // decides what happens when Kafka is slow.
    let queue = Arc::new(FrameQueue::<EncodedFrame>::new(1, QueuePolicy::Block));
    let job = CaptureJob {
        source_uri: request.source_uri.clone(),
        spec,
        fps: request.fps,
        encoder,
        options: request.options(),
        queue: Arc::clone(&queue),
        ledger: Arc::clone(&ledger),
        stop,
    };
    // The child's log lines say whose they are (they share the parent's stderr).
    let span = tracing::info_span!("capture_child", channel = %request.channel_id);
    let capture = std::thread::spawn(move || span.in_scope(|| capture::capture_loop(job)));
    let outcome = runtime.block_on(async {
        let mut report = tokio::time::interval(LEDGER_INTERVAL);
        loop {
            tokio::select! {
                frame = queue.pop() => match frame {
                    Some(frame) => write_frame(&mut out, &frame)?,
                    None => break,
                },
                _ = report.tick() => {
                    write_ledger(&mut out, &ledger.snapshot())?;
                    out.flush()?;
                }
            }
        }
        Ok::<(), std::io::Error>(())
    });
    let _ = capture.join();
    outcome?;
    write_ledger(&mut out, &ledger.snapshot())?;
    out.flush()
}

fn fail_child(ledger: &ChannelLedger, out: &mut impl Write, reason: String) -> std::io::Result<()> {
    tracing::error!(%reason, "capture failed");
    ledger.record_error(reason);
    ledger.set_state(SourceState::Failed);
    write_ledger(out, &ledger.snapshot())?;
    out.flush()
}

fn write_frame(out: &mut impl Write, frame: &EncodedFrame) -> std::io::Result<()> {
    let length = u32::try_from(frame.payload.len()).map_err(std::io::Error::other)?;
    out.write_all(&[FRAME_TAG])?;
    out.write_all(&frame.capture_time_us.to_le_bytes())?;
    out.write_all(&length.to_le_bytes())?;
    out.write_all(&frame.payload)?;
    out.flush()
}

fn write_ledger(out: &mut impl Write, ledger: &v1::ChannelLedger) -> std::io::Result<()> {
    let encoded = ledger.encode_to_vec();
    let length = u32::try_from(encoded.len()).map_err(std::io::Error::other)?;
    out.write_all(&[LEDGER_TAG])?;
    out.write_all(&length.to_le_bytes())?;
    out.write_all(&encoded)
}

/// One message from a child.
#[derive(Debug, PartialEq)]
enum ChildMessage {
    Frame { capture_time_us: i64, payload: Vec<u8> },
    // Boxed: a ledger is several times the size of a frame's message, which is the common one.
    Ledger(Box<v1::ChannelLedger>),
}

/// Reads the next message; `None` at a clean end of the stream.
fn read_message(input: &mut impl Read) -> std::io::Result<Option<ChildMessage>> {
    let mut tag = [0_u8; 1];
    match input.read_exact(&mut tag) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let read_payload = |input: &mut dyn Read| -> std::io::Result<Vec<u8>> {
        let mut length = [0_u8; 4];
        input.read_exact(&mut length)?;
        let length = u32::from_le_bytes(length) as usize;
        if length > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::other(format!("a {length}-byte message")));
        }
        let mut payload = vec![0_u8; length];
        input.read_exact(&mut payload)?;
        Ok(payload)
    };
    match tag[0] {
        FRAME_TAG => {
            let mut time = [0_u8; 8];
            input.read_exact(&mut time)?;
            let payload = read_payload(input)?;
            Ok(Some(ChildMessage::Frame {
                capture_time_us: i64::from_le_bytes(time),
                payload,
            }))
        }
        LEDGER_TAG => {
            let encoded = read_payload(input)?;
            v1::ChannelLedger::decode(encoded.as_slice())
                .map(|ledger| Some(ChildMessage::Ledger(Box::new(ledger))))
                .map_err(std::io::Error::other)
        }
        other => Err(std::io::Error::other(format!("unknown message tag {other:#04x}"))),
    }
}

/// The parent side: runs `request`'s capture in children of `binary` until the source ends,
/// `stop` is cancelled or a file's capture crashed, and feeds the channel's `queue` and
/// `ledger` as a capture thread would. Closes the queue at the end.
pub fn supervise(
    binary: &Path,
    request: &CaptureRequest,
    spec: &SourceSpec,
    queue: &FrameQueue<EncodedFrame>,
    ledger: &ChannelLedger,
    stop: &CancellationToken,
) {
    let final_state = supervise_children(binary, request, spec, queue, ledger, stop);
    ledger.set_state(final_state);
    queue.close();
    tracing::info!(source = %request.source_uri, frames = ledger.captured(), state = final_state.as_str(), "capture ended");
}

fn supervise_children(
    binary: &Path,
    request: &CaptureRequest,
    spec: &SourceSpec,
    queue: &FrameQueue<EncodedFrame>,
    ledger: &ChannelLedger,
    stop: &CancellationToken,
) -> SourceState {
    let mut sequence: u64 = ledger.next_sequence();
    let mut backoff = capture::INITIAL_BACKOFF;
    let max_backoff = Duration::from_millis(request.max_backoff_ms.max(1));
    loop {
        if stop.is_cancelled() {
            return SourceState::Stopped;
        }
        let mut this_run = request.clone();
        this_run.max_frames = request.max_frames.map(|limit| limit.saturating_sub(sequence));
        let run = match run_one_child(binary, &this_run, queue, ledger, stop, &mut sequence) {
            Ok(run) => run,
            Err(error) => {
                let reason = format!("cannot run a capture process ({}): {error}", binary.display());
                tracing::error!(source = %request.source_uri, binary = %binary.display(), %error, "cannot run a capture process");
                ledger.record_error(reason);
                return SourceState::Failed;
            }
        };
        if run.refused || stop.is_cancelled() {
            return SourceState::Stopped;
        }
        if run.status.success() {
            return run.last_state.unwrap_or(SourceState::Ended);
        }
        ledger.record_capture_crash();
        let crash = describe_exit(run.status);
        if spec.is_live() {
            let reason = format!(
                "capture process of `{}` crashed ({crash}) after {} frames; restarting it in {backoff:?}",
                request.source_uri, run.frames
            );
            tracing::error!(source = %request.source_uri, %crash, frames = run.frames, retry_in = ?backoff, "capture process crashed; restarting it");
            ledger.record_error(reason);
            ledger.set_state(SourceState::Reconnecting);
            if !capture::sleep_unless_stopped(stop, backoff) {
                return SourceState::Stopped;
            }
            backoff = (backoff * 2).min(max_backoff);
        } else {
            let reason = format!(
                "capture process of `{}` crashed ({crash}) after {} frames; the channel stops here (a restart would replay the file); other channels are unaffected",
                request.source_uri, run.frames
            );
            tracing::error!(source = %request.source_uri, %crash, frames = run.frames, "capture process crashed; the channel stops here");
            ledger.record_error(reason);
            return SourceState::Failed;
        }
    }
}

struct ChildRun {
    status: ExitStatus,
    frames: u64,
    last_state: Option<SourceState>,
    /// The queue refused a frame because the channel is stopping.
    refused: bool,
}

fn run_one_child(
    binary: &Path,
    request: &CaptureRequest,
    queue: &FrameQueue<EncodedFrame>,
    ledger: &ChannelLedger,
    stop: &CancellationToken,
    sequence: &mut u64,
) -> std::io::Result<ChildRun> {
    let mut child = Command::new(binary)
        .arg(CHILD_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    line.push('\n');
    stdin.write_all(line.as_bytes())?;
    let child = Arc::new(Mutex::new(child));
    let done = CancellationToken::new();
    let stopper = spawn_stopper(stdin, Arc::clone(&child), stop.clone(), done.clone());

    let mut input = BufReader::with_capacity(1 << 20, stdout);
    let mut run = ChildRun {
        status: ExitStatus::default(),
        frames: 0,
        last_state: None,
        refused: false,
    };
    // The child's counts start from zero; the channel's go on from where they are.
    let mut previous = v1::ChannelLedger::default();
    loop {
        let message = match read_message(&mut input) {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // A child that dies mid-message is a crash, seen in its exit status.
            Err(error) => {
                tracing::debug!(%error, "capture child stream broke");
                break;
            }
        };
        match message {
            ChildMessage::Frame {
                capture_time_us,
                payload,
            } => {
                ledger.record_frame_read();
                let frame = EncodedFrame {
                    payload,
                    capture_time_us,
                    sequence: *sequence,
                };
                match queue.push(frame, stop) {
                    Pushed::Queued => {}
                    Pushed::QueuedDroppingOldest => ledger.record_dropped(),
                    Pushed::Refused => {
                        run.refused = true;
                        break;
                    }
                }
                ledger.record_captured();
                ledger.sequence_used(*sequence);
                *sequence += 1;
                run.frames += 1;
            }
            ChildMessage::Ledger(current) => {
                ledger.adopt_source_report(&previous, &current);
                run.last_state = SourceState::parse(&current.source_state);
                previous = *current;
            }
        }
    }
    if run.refused {
        stop.cancel();
    }
    // Reap the child; the stopper kills it if it does not go once asked.
    drop(input);
    run.status = loop {
        let status = child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()?;
        if let Some(status) = status {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    done.cancel();
    let _ = stopper.join();
    Ok(run)
}

/// Closes the child's stdin when the channel stops (its request to stop), and kills it if it
/// is still running [`STOP_GRACE`] later. Ends when `done` is cancelled.
fn spawn_stopper(
    stdin: ChildStdin,
    child: Arc<Mutex<Child>>,
    stop: CancellationToken,
    done: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !(stop.is_cancelled() || done.is_cancelled()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(stdin);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if done.is_cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("capture process did not stop within {STOP_GRACE:?}; killing it");
        let _ = child.lock().unwrap_or_else(PoisonError::into_inner).kill();
    })
}

/// "killed by signal 11 (SIGSEGV)" or "exit status 1".
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(signal), _) => {
            let name = match signal {
                4 => "SIGILL",
                6 => "SIGABRT",
                7 => "SIGBUS",
                8 => "SIGFPE",
                9 => "SIGKILL",
                11 => "SIGSEGV",
                15 => "SIGTERM",
                _ => "",
            };
            if name.is_empty() {
                format!("killed by signal {signal}")
            } else {
                format!("killed by signal {signal} ({name})")
            }
        }
        (None, Some(code)) => format!("exit status {code}"),
        (None, None) => "unknown exit".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_a_cut_stream_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        let frame = EncodedFrame {
            payload: b"jpeg bytes".to_vec(),
            capture_time_us: -5,
            sequence: 0,
        };
        write_frame(&mut bytes, &frame).expect("write");
        let ledger = v1::ChannelLedger {
            frames_undecodable: 3,
            source_state: "capturing".to_owned(),
            ..Default::default()
        };
        write_ledger(&mut bytes, &ledger).expect("write");
        let mut input = bytes.as_slice();
        assert_eq!(
            read_message(&mut input).expect("frame"),
            Some(ChildMessage::Frame {
                capture_time_us: -5,
                payload: b"jpeg bytes".to_vec()
            })
        );
        assert_eq!(
            read_message(&mut input).expect("ledger"),
            Some(ChildMessage::Ledger(Box::new(ledger)))
        );
        assert_eq!(read_message(&mut input).expect("end"), None);
        for cut in 1..bytes.len() {
            let mut input = &bytes[..cut];
            let mut outcome = Ok(Some(ChildMessage::Ledger(Default::default())));
            while let Ok(Some(_)) = outcome {
                outcome = read_message(&mut input);
            }
            assert!(outcome.is_err() || cut == 23, "cut at {cut}: {outcome:?}");
        }
        assert!(read_message(&mut &b"Zjunk"[..]).is_err());
    }

    #[test]
    fn exits_are_described_with_their_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(11)), "killed by signal 11 (SIGSEGV)");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit status 1");
    }

    #[test]
    fn a_request_survives_its_json_line() {
        let schema = FrameSchema {
            version: 3,
            width: 64,
            height: 48,
            channels: 3,
            pixel_format: v1::PixelFormat::Rgb24.into(),
            encoding: v1::FrameEncoding::Jpeg.into(),
            fps: 12.5,
        };
        let options = CaptureOptions {
            pace: Pace::Realtime,
            max_frames: Some(7),
            stall_timeout: Duration::from_secs(3),
            max_backoff: Duration::from_secs(30),
            retry_files: false,
        };
        let request = CaptureRequest::new(
            "cam",
            "synthetic://64x48",
            &schema,
            Quality {
                jpeg: 80,
                png_compression: 1,
            },
            &options,
        );
        let line = serde_json::to_string(&request).expect("json");
        assert!(!line.contains('\n'));
        let back: CaptureRequest = serde_json::from_str(&line).expect("parse");
        assert_eq!(back.schema(), FrameSchema { version: 1, ..schema });
        assert_eq!(back.options().pace, Pace::Realtime);
        assert_eq!(back.options().max_frames, Some(7));
    }
}
