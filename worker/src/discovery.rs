//! Which channels and schema versions exist: the channel list from the coordinator (and the
//! topics to subscribe to that it implies), refreshed periodically and whenever a frame
//! names a channel or schema version the worker has not seen.

use crate::Worker;
use crate::catalog::Catalog;
use crate::record::ConsumedFrame;
use crate::report::PipelineState;
use anyhow::Context;
use framefleet_proto::client::{CallError, CoordinatorChannel};
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;
use framefleet_proto::v1::{Channel, GetPipelineRequest, GetSchemaRequest, ListChannelsRequest, PipelineVersion};
use framefleet_proto::wire;
use rdkafka::consumer::Consumer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most one extra channel lookup per this interval for frames of unknown channels, so a
/// topic full of garbage cannot turn into a flood of coordinator calls.
const UNKNOWN_CHANNEL_LOOKUP_INTERVAL: Duration = Duration::from_secs(1);

impl Worker {
    /// Re-reads the channel list (every page) and subscribes to the topics this worker's
    /// reader consumes ([`Channel::topics_for`]: the channels that name its `--pipeline`, or
    /// that name none when it serves none), except those of drained channels. A worker serving
    /// a pipeline also takes up the pipeline's newest version here.
    pub(crate) async fn refresh_channels(&mut self) -> anyhow::Result<()> {
        self.follow_pipeline().await;
        let mut channels: Vec<Channel> = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .channel_client
                .list_channels(ListChannelsRequest {
                    id_prefix: self.config.channel_prefix.clone(),
                    page_size: 1000,
                    page_token,
                    ..ListChannelsRequest::default()
                })
                .await
                .map_err(CallError::doing("listing channels"))?
                .into_inner();
            channels.extend(page.channels);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        // A drained channel (ended, every frame committed) holds no partitions: they would
        // only take a share of the group's assignment from channels that still have frames.
        let mut topics: Vec<String> = channels
            .iter()
            .filter(|channel| channel.drained_unix_ms == 0)
            .flat_map(|channel| channel.topics_for(self.config.pipeline.as_deref()))
            .collect();
        topics.sort();
        topics.dedup();
        let mut catalog = Catalog {
            channels: HashMap::new(),
            schemas: self.catalog.schemas.clone(),
        };
        for channel in channels {
            catalog.insert_channel(channel);
        }
        self.catalog = Arc::new(catalog);
        if topics == self.subscribed_topics {
            return Ok(());
        }
        if topics.is_empty() {
            self.consumer.unsubscribe();
            tracing::info!("no channel has frames left to consume; unsubscribed");
        } else {
            let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&topic_names)
                .context("subscribing to channel topics")?;
            tracing::info!(topics = ?topics, "subscribed");
        }
        self.subscribed_topics = topics;
        Ok(())
    }

    /// A frame from a channel registered after the last refresh, or written with a schema
    /// version this worker has not seen, must not be dead-lettered as unknown: look it up
    /// before deciding.
    pub(crate) async fn learn_unknown_channels(&mut self, frames: &[ConsumedFrame]) {
        let recently_looked_up = self
            .last_unknown_channel_lookup
            .is_some_and(|at| at.elapsed() < UNKNOWN_CHANNEL_LOOKUP_INTERVAL);
        if recently_looked_up {
            return;
        }
        // Only the two headers that name the catalog entry are read: this runs for every batch,
        // and the full header parse happens once per frame in `process_batch` anyway.
        let mut unknown_channel = false;
        let mut missing_versions: Vec<(String, u32)> = Vec::new();
        for frame in frames {
            let Some(channel_id) = frame.header_text(wire::HEADER_CHANNEL) else {
                continue;
            };
            unknown_channel |= !self.catalog.channels.contains_key(channel_id);
            let version = frame
                .header_text(wire::HEADER_SCHEMA_VERSION)
                .and_then(|text| text.parse::<u32>().ok());
            if let Some(version) = version
                && self.catalog.schema(channel_id, version).is_none()
            {
                missing_versions.push((channel_id.to_owned(), version));
            }
        }
        missing_versions.sort();
        missing_versions.dedup();
        if !unknown_channel && missing_versions.is_empty() {
            return;
        }
        self.last_unknown_channel_lookup = Some(Instant::now());
        if unknown_channel && let Err(error) = self.refresh_channels().await {
            tracing::warn!(error = format!("{error:#}"), "cannot refresh channels");
        }
        let mut learned = Vec::new();
        for (channel_id, version) in missing_versions {
            if version == 0 || self.catalog.schema(&channel_id, version).is_some() {
                continue;
            }
            let request = GetSchemaRequest {
                channel_id: channel_id.clone(),
                version,
            };
            match self.schema_client.get_schema(request).await {
                Ok(schema) => learned.push(((channel_id, version), schema.into_inner())),
                // NOT_FOUND: the frame really names a version that does not exist; it will be
                // dead-lettered with that reason.
                Err(status) => {
                    tracing::debug!(channel = %channel_id, version, "{}", CallError::new("schema lookup", status))
                }
            }
        }
        if !learned.is_empty() {
            let mut catalog = (*self.catalog).clone();
            for ((channel_id, version), schema) in learned {
                catalog.schemas.entry(channel_id).or_default().insert(version, schema);
            }
            self.catalog = Arc::new(catalog);
        }
    }
}

/// The current version of pipeline `name`.
///
/// Errors: the pipeline is not registered (create it with `framefleet pipelines create`), or
/// the coordinator cannot be asked.
pub(crate) async fn current_version(
    client: &mut PipelineServiceClient<CoordinatorChannel>,
    name: &str,
) -> anyhow::Result<PipelineVersion> {
    match client
        .get_pipeline(GetPipelineRequest {
            name: name.to_owned(),
            version: 0,
        })
        .await
    {
        Ok(version) => Ok(version.into_inner()),
        Err(status) => {
            let error = CallError::new(format!("reading pipeline `{name}`"), status);
            if error.is_not_found() {
                anyhow::bail!(
                    "--pipeline `{name}` is not registered at the coordinator; create it first (`framefleet pipelines create {name} …`)"
                );
            }
            Err(error.into())
        }
    }
}

impl Worker {
    /// Takes up a new version of the served pipeline: batches computed from now on run it,
    /// while batches already computed keep the version they ran (each frame gets a result of
    /// one version or the other; offsets are stored in order either way). A model version the
    /// new version names is fetched and loaded first. A version this worker cannot run (a
    /// model that cannot be fetched or does not load, another model than `--model`'s) is
    /// logged once and the current one kept, so the channels' frames keep getting results.
    async fn follow_pipeline(&mut self) {
        let Some(name) = self.config.pipeline.clone() else {
            return;
        };
        let version = match current_version(&mut self.pipeline_client, &name).await {
            Ok(version) => version,
            Err(error) => {
                tracing::warn!(pipeline = %name, error = format!("{error:#}"), "cannot read the pipeline's current version");
                return;
            }
        };
        let running = self.stages.pipeline.as_ref().map(|served| served.version);
        if running == Some(version.version) || self.refused_version == Some(version.version) {
            return;
        }
        if self
            .pipeline_retry
            .is_some_and(|retry| retry.version == version.version && Instant::now() < retry.at)
        {
            return;
        }
        // The fetch and load (a few hundred milliseconds for a model the cache has, seconds
        // for one it fetches) hold up consuming, not frames: offsets are stored as before.
        let detector = self
            .models
            .detector_for(
                &version,
                self.local_model.as_ref(),
                self.stages.detector.as_ref(),
                &self.device,
            )
            .await;
        match detector
            .map_err(crate::stages::PipelineError::from)
            .and_then(|detector| crate::stages::Stages::from_pipeline(&version, detector))
        {
            Ok(stages) => {
                tracing::info!(pipeline = %name, from = ?running, to = version.version, results_topic = %stages.results_topic, "a new pipeline version takes over from the next batch");
                if let Some(served) = &stages.pipeline {
                    self.counters.set_pipeline(PipelineState::running(served));
                }
                self.stages = Arc::new(stages);
                self.refused_version = None;
                self.pipeline_retry = None;
            }
            Err(error) => {
                tracing::error!(pipeline = %name, version = version.version, %error, "cannot run the pipeline's new version; the running one stays");
                // A coordinator or broker that did not answer this time is asked again later
                // (each wait twice the last, so a long outage does not hold up consuming at every
                // refresh); a version that cannot run here is not tried again.
                if error.is_transient() {
                    self.pipeline_retry = Some(PipelineRetry::after(self.pipeline_retry, version.version));
                } else {
                    self.refused_version = Some(version.version);
                }
                self.counters.set_pipeline(PipelineState {
                    name,
                    version: running.unwrap_or_default(),
                    error: error.to_string(),
                });
            }
        }
    }
}

/// When a pipeline version whose model could not be fetched is tried again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipelineRetry {
    version: u32,
    at: Instant,
    backoff: Duration,
}

impl PipelineRetry {
    const FIRST: Duration = Duration::from_secs(5);
    const MOST: Duration = Duration::from_secs(300);

    /// The retry after a failed try of `version`: 5 s after the first failure, then twice the
    /// last wait, at most 5 minutes.
    fn after(last: Option<Self>, version: u32) -> Self {
        let backoff = match last {
            Some(last) if last.version == version => (last.backoff * 2).min(Self::MOST),
            _ => Self::FIRST,
        };
        Self {
            version,
            at: Instant::now() + backoff,
            backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fetch_is_tried_again_ever_later_up_to_five_minutes() {
        let mut retry = PipelineRetry::after(None, 2);
        assert_eq!(retry.backoff, Duration::from_secs(5));
        let waits: Vec<u64> = (0..8)
            .map(|_| {
                retry = PipelineRetry::after(Some(retry), 2);
                retry.backoff.as_secs()
            })
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            PipelineRetry::after(Some(retry), 3).backoff,
            Duration::from_secs(5),
            "another version starts over"
        );
    }
}
