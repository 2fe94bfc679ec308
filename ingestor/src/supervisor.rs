//! The channels this ingestor captures, kept equal to what the coordinator's assignment watch
//! says: each channel's capture (a process of its own, or a thread) and its delivery task,
//! started, restarted and stopped as its record changes.

use crate::capture::{CaptureJob, CaptureOptions, EncodedFrame};
use crate::config::IngestorConfig;
use crate::encode::{EncodeError, FrameEncoder, Quality};
use crate::ledger::Ledgers;
use crate::ledger::SourceState;
use crate::producer::{ChannelStream, Producers};
use crate::queue::FrameQueue;
use crate::source::{SourceError, SourceSpec};
use crate::{capture, isolation, producer};
use framefleet_common::kafka;
use framefleet_proto::v1::{AssignmentUpdate, Channel, FrameSchema};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why an assigned channel cannot start on this ingestor.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("channel `{0}` has no schema")]
    NoSchema(String),
    #[error(
        "channel `{channel_id}` frames are {frame_bytes} bytes, over this ingestor's --max-frame-mib {max_frame_mib}"
    )]
    FrameTooLarge {
        channel_id: String,
        frame_bytes: u64,
        max_frame_mib: u32,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("channel `{channel_id}`: {error}")]
    Encoder { channel_id: String, error: EncodeError },
}

/// What makes a running channel's capture obsolete when it changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelKey {
    pub(crate) source_uri: String,
    pub(crate) schema_version: u32,
    pub(crate) topics: Vec<String>,
}

impl ChannelKey {
    pub(crate) fn of(channel: &Channel) -> Self {
        Self {
            source_uri: channel.source_uri.clone(),
            schema_version: channel.schema.as_ref().map(|schema| schema.version).unwrap_or_default(),
            topics: channel.all_topics().to_vec(),
        }
    }
}

pub(crate) struct RunningChannel {
    pub(crate) key: ChannelKey,
    pub(crate) generation: u64,
    pub(crate) stop: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

/// The channels this ingestor captures, kept equal to what the assignment watch says.
pub(crate) struct Supervisor {
    pub(crate) config: Arc<IngestorConfig>,
    pub(crate) ingestor_epoch: u64,
    pub(crate) producers: Producers,
    pub(crate) ledgers: Ledgers,
    /// Encoder settings of channels configured here; assigned channels use the defaults.
    pub(crate) quality: HashMap<String, Quality>,
    pub(crate) running: HashMap<String, RunningChannel>,
    /// Channels whose source ended (or failed): not restarted until their record changes.
    pub(crate) ended: HashMap<String, ChannelKey>,
    pub(crate) finished: mpsc::UnboundedSender<(String, u64)>,
    pub(crate) generation: u64,
    /// The binary that capture processes run from; `None`: capture threads.
    pub(crate) capture_binary: Option<std::path::PathBuf>,
}

impl Supervisor {
    /// The running channels `update` takes away from this ingestor.
    pub(crate) fn taken_by(&self, update: &AssignmentUpdate) -> Vec<String> {
        let mut taken: Vec<String> = update
            .removed_channel_ids
            .iter()
            .filter(|id| self.running.contains_key(id.as_str()))
            .cloned()
            .collect();
        if update.reset {
            taken.extend(
                self.running
                    .keys()
                    .filter(|id| !update.channels.iter().any(|channel| &channel.channel_id == *id))
                    .cloned(),
            );
        }
        taken
    }

    pub(crate) async fn apply(&mut self, update: AssignmentUpdate) {
        if update.reset {
            let listed: HashSet<&str> = update
                .channels
                .iter()
                .map(|channel| channel.channel_id.as_str())
                .collect();
            let gone: Vec<String> = self
                .running
                .keys()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            for channel_id in gone {
                self.stop(&channel_id).await;
            }
            self.ended.retain(|id, _| listed.contains(id.as_str()));
        }
        for channel_id in &update.removed_channel_ids {
            self.stop(channel_id).await;
            self.ended.remove(channel_id);
        }
        for channel in update.channels {
            let key = ChannelKey::of(&channel);
            if self
                .running
                .get(&channel.channel_id)
                .is_some_and(|running| running.key == key)
                || self.ended.get(&channel.channel_id) == Some(&key)
            {
                continue;
            }
            self.stop(&channel.channel_id).await;
            self.start(channel, key);
        }
    }

    pub(crate) fn start(&mut self, channel: Channel, key: ChannelKey) {
        let channel_id = channel.channel_id.clone();
        let ledger = self.ledgers.get_or_create(&channel_id);
        ledger.reopen();
        ledger.clear_error();
        let prepared = match self.prepare(&channel, &key) {
            Ok(prepared) => prepared,
            Err(reason) => {
                tracing::error!(channel = %channel_id, %reason, "channel cannot start");
                ledger.record_error(reason.to_string());
                ledger.set_state(SourceState::Failed);
                ledger.mark_finished();
                self.ended.insert(channel_id, key);
                return;
            }
        };
        self.generation += 1;
        let generation = self.generation;
        let stop = CancellationToken::new();
        let queue = Arc::new(FrameQueue::<EncodedFrame>::new(
            self.config.queue_frames,
            self.config.queue_policy,
        ));
        let producer = self.producers.for_encoding(prepared.encoder.encoding()).clone();
        let options = self.capture_options();
        tracing::info!(channel = %channel_id, source = %channel.source_uri, topics = ?key.topics, isolated = self.capture_binary.is_some(), "capturing");
        let run_capture: Box<dyn FnOnce() + Send> = match &self.capture_binary {
            Some(binary) => {
                let request = isolation::CaptureRequest::new(
                    &channel_id,
                    &channel.source_uri,
                    &prepared.schema,
                    prepared.quality,
                    &options,
                );
                let (binary, spec, queue, ledger, stop) = (
                    binary.clone(),
                    prepared.spec,
                    Arc::clone(&queue),
                    Arc::clone(&ledger),
                    stop.clone(),
                );
                Box::new(move || isolation::supervise(&binary, &request, &spec, &queue, &ledger, &stop))
            }
            None => {
                let job = CaptureJob {
                    source_uri: channel.source_uri.clone(),
                    spec: prepared.spec,
                    fps: prepared.schema.fps,
                    encoder: prepared.encoder,
                    options,
                    queue: Arc::clone(&queue),
                    ledger: Arc::clone(&ledger),
                    stop: stop.clone(),
                };
                Box::new(move || capture::capture_loop(job))
            }
        };
        let finished = self.finished.clone();
        let task = tokio::spawn(async move {
            let capture_ledger = Arc::clone(&ledger);
            let capture = tokio::task::spawn_blocking(run_capture);
            let delivery = tokio::spawn(producer::deliver_channel(
                producer,
                prepared.stream,
                queue,
                Arc::clone(&ledger),
            ));
            if let Err(error) = capture.await {
                capture_ledger.record_error(format!("capture thread panicked: {error}"));
                capture_ledger.set_state(SourceState::Failed);
            }
            if let Err(error) = delivery.await {
                ledger.record_error(format!("delivery task panicked: {error}"));
            }
            ledger.mark_finished();
            let _ = finished.send((ledger.channel_id.clone(), generation));
        });
        self.running.insert(
            channel_id,
            RunningChannel {
                key,
                generation,
                stop,
                task,
            },
        );
    }

    pub(crate) fn prepare(&self, channel: &Channel, key: &ChannelKey) -> Result<PreparedChannel, PrepareError> {
        let schema = channel
            .schema
            .as_ref()
            .ok_or_else(|| PrepareError::NoSchema(channel.channel_id.clone()))?;
        if schema.raw_frame_bytes() > self.config.kafka.max_frame_bytes() as u64 {
            return Err(PrepareError::FrameTooLarge {
                channel_id: channel.channel_id.clone(),
                frame_bytes: schema.raw_frame_bytes(),
                max_frame_mib: self.config.kafka.max_frame_mib,
            });
        }
        let spec = SourceSpec::parse(&channel.source_uri)?;
        let quality = self
            .quality
            .get(&channel.channel_id)
            .copied()
            .unwrap_or_else(|| self.config.default_quality());
        let encoder = FrameEncoder::new(schema, quality).map_err(|error| PrepareError::Encoder {
            channel_id: channel.channel_id.clone(),
            error,
        })?;
        let max_payload = kafka::max_frame_payload_bytes(schema.raw_frame_bytes());
        Ok(PreparedChannel {
            spec,
            encoder,
            schema: *schema,
            quality,
            stream: ChannelStream {
                channel_id: channel.channel_id.clone(),
                topics: key.topics.clone(),
                schema_version: schema.version,
                ingestor_epoch: self.ingestor_epoch,
                max_payload_bytes: usize::try_from(max_payload).unwrap_or(usize::MAX),
                delivery_timeout: Duration::from_secs(self.config.delivery_timeout_secs),
            },
        })
    }

    pub(crate) fn capture_options(&self) -> CaptureOptions {
        CaptureOptions {
            pace: self.config.pace,
            max_frames: self.config.max_frames,
            stall_timeout: Duration::from_secs(self.config.stall_timeout_secs.max(1)),
            max_backoff: Duration::from_secs(self.config.max_backoff_secs.max(1)),
            retry_files: self.config.accepts_assignments(),
        }
    }

    /// Stops a channel's capture and waits until every frame it captured is settled.
    pub(crate) async fn stop(&mut self, channel_id: &str) {
        if let Some(running) = self.running.remove(channel_id) {
            tracing::info!(channel = %channel_id, "stopping capture");
            running.stop.cancel();
            if let Err(error) = running.task.await {
                tracing::error!(channel = %channel_id, %error, "channel task failed");
            }
        }
    }

    pub(crate) fn on_finished(&mut self, channel_id: &str, generation: u64) {
        let Some(running) = self.running.get(channel_id) else {
            return;
        };
        if running.generation != generation {
            return;
        }
        if let Some(running) = self.running.remove(channel_id) {
            self.ended.insert(channel_id.to_owned(), running.key);
        }
    }

    pub(crate) async fn stop_all(&mut self) {
        for running in self.running.values() {
            running.stop.cancel();
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for channel_id in ids {
            self.stop(&channel_id).await;
        }
    }
}

pub(crate) struct PreparedChannel {
    pub(crate) spec: SourceSpec,
    pub(crate) encoder: FrameEncoder,
    pub(crate) schema: FrameSchema,
    pub(crate) quality: Quality,
    pub(crate) stream: ChannelStream,
}
