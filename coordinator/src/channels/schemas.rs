//! The frame-schema registry: one etcd key per (channel, version), written in the same
//! transaction as the channel record that names the current version.

use super::record::{SchemaRecord, decode, encode_schema, schema_key, schema_prefix};
use super::{ChannelRegistry, Edit, validate};
use crate::error::CoordinatorError;
use crate::kafka::topics::{TopicAdmin, TopicSpec};
use crate::store::{Condition, MetadataStore, Write};
use framefleet_proto::v1::{FrameSchema, TopicStrategy};

impl<S: MetadataStore, T: TopicAdmin> ChannelRegistry<S, T> {
    /// Adds the next schema version of a channel. A version that changes the decoded frame
    /// size must be asked for with `allow_frame_size_change`; then the channel's topics are
    /// resized first, so no frame of the new size meets a record limit.
    pub async fn add_schema_version(
        &self,
        channel_id: &str,
        schema: Option<&FrameSchema>,
        allow_frame_size_change: bool,
        expected_revision: i64,
    ) -> Result<FrameSchema, CoordinatorError> {
        validate::expected_revision(expected_revision)?;
        let (current, stored) = self.get_record(channel_id).await?;
        super::check_revision(channel_id, expected_revision, stored.mod_revision)?;
        let next_version = current.schema.version.saturating_add(1);
        let proposed = validate::schema(schema, self.placement.max_frame_bytes, next_version)?;
        if proposed.same_shape(&current.schema) {
            // Asking again for what is already current is not a new version.
            return Ok(current.schema.to_proto());
        }
        let resizes = !proposed.same_frame_size(&current.schema);
        if resizes && !allow_frame_size_change {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "the new schema changes the frame size of `{channel_id}` from {}×{}×{} to {}×{}×{}; \
                 set allow_frame_size_change to confirm",
                current.schema.width,
                current.schema.height,
                current.schema.channels,
                proposed.width,
                proposed.height,
                proposed.channels
            )));
        }
        if resizes && current.strategy() != TopicStrategy::SharedPool {
            // Pool topics already take the coordinator's largest frame; the others were sized
            // for this channel and must take the largest frame of any version still in them.
            let largest = self
                .largest_frame_bytes(channel_id)
                .await?
                .max(proposed.raw_frame_bytes());
            for topic in current.topics() {
                // Only the name, size limit and retention of the spec matter for a resize.
                let spec = TopicSpec {
                    name: topic,
                    ..self.placement.dedicated(channel_id, largest)
                };
                self.topics.resize_topic(&spec).await?;
            }
        }

        let new_key = schema_key(channel_id, next_version);
        let encoded = encode_schema(channel_id, &proposed)?;
        let expected = if expected_revision == 0 {
            stored.mod_revision
        } else {
            expected_revision
        };
        let (record, _, _) = self
            .edit(
                channel_id,
                expected,
                vec![Condition::Absent(new_key.clone())],
                |record, _| {
                    if !record.is_active() {
                        return Err(super::draining(channel_id));
                    }
                    let mut updated = record.clone();
                    updated.schema = proposed.clone();
                    updated.updated_unix_ms = framefleet_common::startup::unix_time_ms();
                    Ok(Edit::Write(
                        Box::new(updated),
                        vec![Write::Put(new_key.clone(), encoded.clone())],
                        (),
                    ))
                },
            )
            .await?;
        tracing::info!(channel = %channel_id, version = next_version, resized = resizes, "schema version added");
        Ok(record.schema.to_proto())
    }

    /// One version of a channel's schema; version 0 is the current one.
    pub async fn get_schema(&self, channel_id: &str, version: u32) -> Result<FrameSchema, CoordinatorError> {
        validate::channel_id(channel_id)?;
        if version == 0 {
            let (record, _) = self.get_record(channel_id).await?;
            return Ok(record.schema.to_proto());
        }
        if let Some(stored) = self.store.get(&schema_key(channel_id, version)).await? {
            return Ok(decode::<SchemaRecord>(&stored)?.to_proto());
        }
        // Channels registered before the registry existed keep version 1 only in their record.
        let (record, _) = self.get_record(channel_id).await?;
        if record.schema.version == version {
            return Ok(record.schema.to_proto());
        }
        Err(CoordinatorError::NotFound {
            kind: "schema version",
            id: format!("{channel_id}@{version}"),
        })
    }

    /// Every version of a channel's schema, oldest first.
    pub async fn list_schemas(&self, channel_id: &str) -> Result<Vec<FrameSchema>, CoordinatorError> {
        let (record, _) = self.get_record(channel_id).await?;
        let mut versions: Vec<SchemaRecord> = self
            .store
            .list(&schema_prefix(channel_id))
            .await?
            .iter()
            .map(decode::<SchemaRecord>)
            .collect::<Result<_, _>>()?;
        if !versions.iter().any(|schema| schema.version == record.schema.version) {
            versions.push(record.schema);
        }
        versions.sort_by_key(|schema| schema.version);
        Ok(versions.iter().map(SchemaRecord::to_proto).collect())
    }

    /// The largest decoded frame of any version of the channel's schema.
    pub(super) async fn largest_frame_bytes(&self, channel_id: &str) -> Result<u64, CoordinatorError> {
        Ok(self
            .list_schemas(channel_id)
            .await?
            .iter()
            .map(FrameSchema::raw_frame_bytes)
            .max()
            .unwrap_or(0))
    }
}
