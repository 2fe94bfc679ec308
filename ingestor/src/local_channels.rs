//! Channels this ingestor registers (and claims) itself: the `--channel` flags and the
//! channel file, registered at start and kept in step with the file as it changes.

use crate::config::{IngestorConfig, LocalChannel};
use crate::encode::Quality;
use crate::ledger::Ledgers;
use crate::ledger::SourceState;
use crate::source::{OpenOptions, OutOfRange, SourceError, SourceSpec};
use crate::supervisor::Supervisor;
use crate::{config, source};
use framefleet_proto::client::CallError;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::{
    Channel, DeregisterChannelRequest, FrameEncoding, FrameSchema, PixelFormat, RegisterChannelRequest,
    UpdateChannelRequest,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why a channel of this ingestor's own list (`--channel`, `--channel-file`) could not be
/// registered with the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0} (to register it without opening it, give width, height and fps)")]
    Probe(SourceError),
    #[error("probing the source failed: {0}")]
    ProbeFailed(String),
    #[error("channel `{channel_id}`: {reason}")]
    Size { channel_id: String, reason: OutOfRange },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the coordinator answered a registration without the channel")]
    NoChannelInAnswer,
}

/// Channels this ingestor registers (and claims) itself: the `--channel` flags and the
/// channel file.
pub(crate) struct LocalChannels {
    pub(crate) config: Arc<IngestorConfig>,
    pub(crate) ingestor_id: String,
    /// Registered channels and the spec they were registered with.
    pub(crate) registered: HashMap<String, LocalChannel>,
    /// The channel file's modification time and channels when last read.
    pub(crate) file_seen: Option<(SystemTime, Vec<LocalChannel>)>,
    /// When each channel was last claimed again after being taken away.
    pub(crate) reclaimed: HashMap<String, std::time::Instant>,
    /// Channels configured here that were taken away and may need claiming again.
    pub(crate) to_reclaim: std::collections::BTreeSet<String>,
}

/// At most one claim per channel per this interval: while this ingestor's registration is
/// itself lapsed, the leader takes the channel away again, and the claims must not spin.
const RECLAIM_INTERVAL: Duration = Duration::from_secs(5);

impl LocalChannels {
    pub(crate) fn all_finished(&self, ledgers: &Ledgers) -> bool {
        // A channel stopped because it was taken away is not done: it may be claimed back
        // (`reclaim`) or come back by assignment.
        self.config.flag_channels().iter().all(|channel| {
            ledgers
                .get(&channel.id)
                .is_some_and(|ledger| ledger.is_finished() && ledger.state() != SourceState::Stopped)
        })
    }

    pub(crate) async fn register(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &mut Supervisor,
        channel: LocalChannel,
    ) {
        let ledger = supervisor.ledgers.get_or_create(&channel.id);
        supervisor.quality.insert(
            channel.id.clone(),
            Quality {
                jpeg: channel.jpeg_quality.unwrap_or(self.config.jpeg_quality).clamp(1, 100),
                png_compression: channel.png_compression.unwrap_or(self.config.png_compression).min(9),
            },
        );
        match self.register_channel(client, &channel).await {
            Ok(registered) => {
                if registered.ingestor_id != self.ingestor_id {
                    tracing::warn!(channel = %channel.id, owner = %registered.ingestor_id, "channel registered but captured elsewhere");
                }
                self.registered.insert(channel.id.clone(), channel);
            }
            Err(reason) => {
                // One bad channel must not stop the others.
                tracing::error!(channel = %channel.id, %reason, "channel cannot start");
                ledger.record_error(reason.to_string());
                ledger.set_state(SourceState::Failed);
                ledger.mark_finished();
            }
        }
    }

    /// Channels configured here that the coordinator took away without anyone moving,
    /// ending or deregistering them — this ingestor's registration lapsed (an etcd member
    /// failing under its coordinator, a network blip) and the leader unassigned them — are
    /// claimed again, as at start. A channel moved to another ingestor, drained or ended is
    /// left alone, as is one whose source this ingestor saw end.
    pub(crate) async fn reclaim(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &Supervisor,
        taken: &[String],
    ) {
        self.to_reclaim.extend(
            taken
                .iter()
                .filter(|channel_id| self.registered.contains_key(channel_id.as_str()))
                .cloned(),
        );
        self.retry_reclaims(client, supervisor).await;
    }

    /// Whether some taken channel still waits to be claimed again.
    pub(crate) fn reclaims_pending(&self) -> bool {
        !self.to_reclaim.is_empty()
    }

    /// Claims the channels waiting for it whose last claim is [`RECLAIM_INTERVAL`] old; drops
    /// those that someone else now owns, that ended, drained or are gone.
    pub(crate) async fn retry_reclaims(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &Supervisor,
    ) {
        let pending: Vec<String> = self.to_reclaim.iter().cloned().collect();
        for channel_id in &pending {
            let Some(local) = self.registered.get(channel_id).cloned() else {
                self.to_reclaim.remove(channel_id);
                continue;
            };
            let source_done = supervisor
                .ledgers
                .get(channel_id)
                .is_some_and(|ledger| matches!(ledger.state(), SourceState::Ended | SourceState::Failed));
            if source_done {
                self.to_reclaim.remove(channel_id);
                continue;
            }
            if !self.claim_due(channel_id) {
                continue;
            }
            let current = client
                .get_channel(framefleet_proto::v1::GetChannelRequest {
                    channel_id: channel_id.clone(),
                })
                .await;
            let current = match current {
                Ok(current) => current.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    self.to_reclaim.remove(channel_id);
                    continue;
                }
                // The coordinator is unreachable: try again later.
                Err(_) => continue,
            };
            let unowned = current.ingestor_id.is_empty()
                && current.ended_unix_ms == 0
                && current.state == i32::from(framefleet_proto::v1::ChannelState::Active);
            self.to_reclaim.remove(channel_id);
            if !unowned {
                continue;
            }
            let claimed = self.register_channel(client, &local).await;
            self.claim_settled(channel_id, claimed);
        }
    }

    /// Whether `channel_id`'s last claim, if any, is [`RECLAIM_INTERVAL`] old.
    fn claim_due(&self, channel_id: &str) -> bool {
        self.reclaimed
            .get(channel_id)
            .is_none_or(|at| at.elapsed() >= RECLAIM_INTERVAL)
    }

    /// Records a claim of `channel_id` (taken out of the pending set before it was made). A
    /// claim the coordinator refused or never answered goes back into the set, to be tried
    /// again once [`RECLAIM_INTERVAL`] has passed: dropping it would leave a channel this
    /// ingestor is configured to capture unowned until something else took it away again.
    fn claim_settled(&mut self, channel_id: &str, claimed: Result<Channel, RegisterError>) {
        self.reclaimed.insert(channel_id.to_owned(), std::time::Instant::now());
        match claimed {
            Ok(_) => {
                tracing::warn!(channel = %channel_id, "the channel was taken away while this ingestor's registration lapsed; claimed it again")
            }
            Err(reason) => {
                tracing::warn!(channel = %channel_id, %reason, "cannot claim the channel again; will retry");
                self.to_reclaim.insert(channel_id.to_owned());
            }
        }
    }

    pub(crate) async fn register_channel(
        &self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        channel: &LocalChannel,
    ) -> Result<Channel, RegisterError> {
        let spec = SourceSpec::parse(&channel.source)?;
        let width = channel.width.or(self.config.width);
        let height = channel.height.or(self.config.height);
        let fps = channel.fps.or(self.config.fps);
        let (width, height, fps) = match (width, height, fps) {
            (Some(width), Some(height), Some(fps)) => (width, height, fps),
            _ => {
                // Ask the source for what was not configured.
                let uri = channel.source.clone();
                let probe_spec = spec.clone();
                let options = OpenOptions {
                    stall_timeout: Duration::from_secs(self.config.stall_timeout_secs.max(1)),
                };
                let info = tokio::task::spawn_blocking(move || {
                    source::open(&uri, &probe_spec, options).map(|source| source.info())
                })
                .await
                .map_err(|error| RegisterError::ProbeFailed(error.to_string()))?
                .map_err(RegisterError::Probe)?;
                (
                    width.unwrap_or(info.width),
                    height.unwrap_or(info.height),
                    fps.unwrap_or(info.fps),
                )
            }
        };
        source::check_dimensions(width, height).map_err(|reason| RegisterError::Size {
            channel_id: channel.id.clone(),
            reason,
        })?;
        let pixel_format = PixelFormat::from(channel.pixel_format.unwrap_or(self.config.pixel_format));
        let encoding = FrameEncoding::from(channel.encoding.unwrap_or(self.config.encoding));
        let schema = FrameSchema {
            version: 1,
            width,
            height,
            channels: pixel_format.channel_count().unwrap_or(3),
            pixel_format: pixel_format.into(),
            encoding: encoding.into(),
            fps,
        };
        let strategy = channel.topic_strategy.unwrap_or(self.config.topic_strategy);
        let pipelines = if channel.pipelines.is_empty() {
            self.config.pipelines.clone()
        } else {
            channel.pipelines.clone()
        };
        let response = client
            .register_channel(RegisterChannelRequest {
                channel_id: channel.id.clone(),
                source_uri: channel.source.clone(),
                schema: Some(schema),
                topic_strategy: framefleet_proto::v1::TopicStrategy::from(strategy).into(),
                pipelines,
                declared_bytes_per_second: 0,
                ingestor_id: self.ingestor_id.clone(),
            })
            .await
            .map_err(|status| CallError::new(format!("registering channel `{}`", channel.id), status))?
            .into_inner();
        let registered = response.channel.ok_or(RegisterError::NoChannelInAnswer)?;
        tracing::info!(
            channel = %channel.id, topics = ?registered.topics, width, height, fps,
            created = response.created, "channel registered"
        );
        Ok(registered)
    }

    /// Registers channels added to the channel file, updates changed sources and drains
    /// channels taken out of it.
    pub(crate) async fn reload_file(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &mut Supervisor,
    ) {
        let Some(path) = self.config.channel_file.clone() else {
            return;
        };
        let modified = std::fs::metadata(&path).and_then(|metadata| metadata.modified()).ok();
        if let (Some(modified), Some((seen, _))) = (modified, &self.file_seen)
            && modified == *seen
        {
            return;
        }
        let channels = match config::read_channel_file(&path) {
            Ok(channels) => channels,
            Err(error) => {
                tracing::error!(%error, "cannot read the channel file; keeping the channels as they are");
                if let Some(modified) = modified {
                    let previous = self.file_seen.take().map(|(_, channels)| channels).unwrap_or_default();
                    self.file_seen = Some((modified, previous));
                }
                return;
            }
        };
        let previous = self.file_seen.take().map(|(_, channels)| channels).unwrap_or_default();
        self.apply_file(client, supervisor, &path, &previous, &channels).await;
        self.file_seen = Some((modified.unwrap_or(SystemTime::UNIX_EPOCH), channels));
    }

    pub(crate) async fn apply_file(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &mut Supervisor,
        path: &std::path::Path,
        previous: &[LocalChannel],
        current: &[LocalChannel],
    ) {
        for channel in current {
            match previous.iter().find(|old| old.id == channel.id) {
                Some(old) if old == channel && self.registered.contains_key(&channel.id) => {}
                Some(old) if self.registered.contains_key(&channel.id) && only_source_changed(old, channel) => {
                    let request = UpdateChannelRequest {
                        channel_id: channel.id.clone(),
                        source_uri: Some(channel.source.clone()),
                        ..UpdateChannelRequest::default()
                    };
                    match client.update_channel(request).await {
                        Ok(_) => {
                            tracing::info!(channel = %channel.id, source = %channel.source, "channel source changed");
                            self.registered.insert(channel.id.clone(), channel.clone());
                        }
                        Err(status) => {
                            tracing::error!(channel = %channel.id, error = %CallError::new("updating the source", status), "cannot update the channel's source")
                        }
                    }
                }
                Some(_) if self.registered.contains_key(&channel.id) => tracing::warn!(
                    channel = %channel.id,
                    file = %path.display(),
                    "only a source change is applied at runtime; change the schema with `framefleet schemas add`"
                ),
                _ => self.register(client, supervisor, channel.clone()).await,
            }
        }
        for old in previous {
            if current.iter().any(|channel| channel.id == old.id) || self.registered.remove(&old.id).is_none() {
                continue;
            }
            // Draining lets the workers finish the frames already in Kafka before the channel
            // is deleted; the assignment watch stops the capture.
            match client
                .deregister_channel(DeregisterChannelRequest {
                    channel_id: old.id.clone(),
                    ..DeregisterChannelRequest::default()
                })
                .await
            {
                Ok(_) => {
                    tracing::info!(channel = %old.id, file = %path.display(), "channel removed from the channel file; draining")
                }
                Err(status) => {
                    tracing::error!(channel = %old.id, error = %CallError::new("deregistering", status), "cannot deregister the channel")
                }
            }
        }
    }
}

pub(crate) fn only_source_changed(old: &LocalChannel, new: &LocalChannel) -> bool {
    let mut same_source = new.clone();
    same_source.source = old.source.clone();
    &same_source == old && old.source != new.source
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn local_channels() -> LocalChannels {
        let config = IngestorConfig::try_parse_from(["framefleet-ingestor", "--channel", "cam-1=file:///tmp/a.mp4"])
            .expect("parse");
        let registered = config
            .flag_channels()
            .into_iter()
            .map(|channel| (channel.id.clone(), channel))
            .collect();
        LocalChannels {
            config: Arc::new(config),
            ingestor_id: "ingestor-1".to_owned(),
            registered,
            file_seen: None,
            reclaimed: HashMap::new(),
            to_reclaim: Default::default(),
        }
    }

    #[test]
    fn a_refused_claim_stays_pending_and_waits_out_the_interval() {
        let mut local = local_channels();
        assert!(local.claim_due("cam-1"), "never claimed: due at once");
        local.claim_settled(
            "cam-1",
            Err(RegisterError::Call(CallError::new(
                "registering channel `cam-1`",
                tonic::Status::unavailable("the coordinator is unavailable"),
            ))),
        );
        assert!(local.reclaims_pending(), "a refused claim must be retried");
        assert!(local.to_reclaim.contains("cam-1"));
        assert!(!local.claim_due("cam-1"), "not before the interval has passed");
        // Once the interval has passed, it is due again.
        local
            .reclaimed
            .insert("cam-1".to_owned(), std::time::Instant::now() - RECLAIM_INTERVAL);
        assert!(local.claim_due("cam-1"));
    }

    #[test]
    fn a_claim_that_succeeds_leaves_nothing_pending() {
        let mut local = local_channels();
        let channel = Channel {
            channel_id: "cam-1".to_owned(),
            ingestor_id: "ingestor-1".to_owned(),
            ..Channel::default()
        };
        local.claim_settled("cam-1", Ok(channel));
        assert!(!local.reclaims_pending());
        assert!(!local.claim_due("cam-1"));
    }
}
