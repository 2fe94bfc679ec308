//! Channels: registration (validate → provision the topics → store in etcd), lookup,
//! listing, update, deregistration with drain, moves between topic strategies, and the
//! versioned schema registry. Every change is an etcd transaction that compares the revision
//! it read, so concurrent writers (two coordinators, two admins) can never lose an update.

pub mod record;
mod schemas;
pub mod validate;

use crate::error::CoordinatorError;
use crate::kafka::topics::{Placement, TopicAdmin, TopicSpec};
use crate::store::{CommitOutcome, Condition, MetadataStore, StoredValue, Write};
use framefleet_proto::v1::{Channel, ChannelState, FrameSchema, TopicStrategy};
use record::{CHANNEL_KEY_PREFIX, CLAIMED_BY_REGISTRATION, decode, encode_schema, schema_prefix};
pub use record::{ChannelRecord, DrainRecord, SchemaRecord, channel_key, schema_key};

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
/// Read-modify-write attempts before a request that did not ask for a revision gives up.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// A channel registration, as asked for.
#[derive(Debug, Clone, Default)]
pub struct ChannelSpec {
    pub channel_id: String,
    pub source_uri: String,
    pub schema: Option<FrameSchema>,
    pub topic_strategy: i32,
    pub pipelines: Vec<String>,
    pub declared_bytes_per_second: u64,
    /// The ingestor that captures the channel itself; empty lets the coordinator choose.
    pub claimed_by: String,
    /// Set for a call with an ingestor's credential: an existing channel is claimed only if it
    /// is `claimed_by`'s own ([`ChannelRecord::owner`]), [`CoordinatorError::NotOwner`] otherwise.
    pub claimant_must_own: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub id_prefix: String,
    pub page_size: u32,
    pub page_token: String,
    pub state: i32,
    pub topic: String,
}

#[derive(Debug, Clone, Default)]
pub struct ChannelChange {
    pub source_uri: Option<String>,
    pub declared_bytes_per_second: Option<u64>,
}

pub struct ChannelRegistry<S, T> {
    store: S,
    topics: T,
    placement: Placement,
}

/// What a read-modify-write decided.
pub enum Edit<R> {
    /// Write this record (and these extra writes) and answer `R`.
    Write(Box<ChannelRecord>, Vec<Write>, R),
    /// Delete the channel and its schemas and answer `R`.
    Delete(R),
    /// Nothing to write; answer `R`.
    Keep(R),
}

impl<S: MetadataStore, T: TopicAdmin> ChannelRegistry<S, T> {
    pub fn new(store: S, topics: T, placement: Placement) -> Self {
        Self {
            store,
            topics,
            placement,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Registers a channel. Topics are provisioned before the record is written, so a stored
    /// channel always has its topics; a failure in between leaves only unused topics, and
    /// retrying is safe because both steps are idempotent.
    pub async fn register(&self, spec: &ChannelSpec) -> Result<(Channel, bool), CoordinatorError> {
        validate::channel_id(&spec.channel_id)?;
        validate::source_uri(&spec.source_uri)?;
        let version = match spec.schema.as_ref().map(|schema| schema.version) {
            None | Some(0 | 1) => 1,
            Some(_) => {
                return Err(CoordinatorError::invalid(
                    "schema.version",
                    "a new channel starts at version 1 (leave it 0 or 1); add versions with AddSchemaVersion",
                ));
            }
        };
        let schema = validate::schema(spec.schema.as_ref(), self.placement.max_frame_bytes, version)?;
        let strategy = validate::strategy(spec.topic_strategy, &spec.pipelines)?;
        let declared_bytes_per_second = match spec.declared_bytes_per_second {
            0 => schema.raw_bytes_per_second(),
            declared => declared,
        };

        if !spec.claimed_by.is_empty() {
            crate::channels::validate::process_id("ingestor_id", &spec.claimed_by)?;
        }
        let key = channel_key(&spec.channel_id);
        if let Some(existing) = self.store.get(&key).await? {
            if spec.claimant_must_own {
                let owner = decode::<ChannelRecord>(&existing)?.owner().to_owned();
                if owner != spec.claimed_by {
                    return Err(CoordinatorError::NotOwner {
                        channel_id: spec.channel_id.clone(),
                        owner,
                    });
                }
            }
            let channel = existing_or_conflict(spec, strategy, &schema, &existing)?;
            return Ok((self.claim(spec, channel).await?, false));
        }

        self.refuse_colliding_id(&spec.channel_id).await?;
        self.refuse_unregistered_pipelines(&spec.pipelines).await?;
        let topic_specs = self
            .place(
                &spec.channel_id,
                strategy,
                &spec.pipelines,
                &schema,
                declared_bytes_per_second,
            )
            .await?;
        self.refuse_colliding_topics(&spec.channel_id, &topic_specs).await?;
        for topic in &topic_specs {
            self.topics.ensure_topic(topic).await?;
        }
        let topics: Vec<String> = topic_specs.into_iter().map(|topic| topic.name).collect();
        let now = framefleet_common::startup::unix_time_ms();
        let record = ChannelRecord {
            channel_id: spec.channel_id.clone(),
            source_uri: spec.source_uri.clone(),
            topic: topics.first().cloned().unwrap_or_default(),
            topics,
            topic_strategy: strategy.as_str_name().to_owned(),
            pipelines: spec.pipelines.clone(),
            state: ChannelState::Active.as_str_name().to_owned(),
            declared_bytes_per_second,
            ingestor_id: spec.claimed_by.clone(),
            owner: spec.claimed_by.clone(),
            assigned_by: if spec.claimed_by.is_empty() {
                String::new()
            } else {
                CLAIMED_BY_REGISTRATION.to_owned()
            },
            created_unix_ms: now,
            updated_unix_ms: now,
            drain: None,
            schema,
            ended_unix_ms: None,
            drained_unix_ms: None,
        };
        let schema_key = schema_key(&spec.channel_id, record.schema.version);
        let outcome = self
            .store
            .commit(
                vec![Condition::Absent(key.clone()), Condition::Absent(schema_key.clone())],
                vec![
                    Write::Put(key.clone(), record.encode()?),
                    Write::Put(schema_key, encode_schema(&spec.channel_id, &record.schema)?),
                ],
            )
            .await?;
        match outcome {
            CommitOutcome::Committed { revision } => {
                tracing::info!(channel = %spec.channel_id, topics = ?record.topics, "channel registered");
                Ok((record.to_proto(revision), true))
            }
            // Lost a race with another registration of the same id.
            CommitOutcome::Conflict => {
                let existing = self.store.get(&key).await?.ok_or_else(|| {
                    CoordinatorError::FailedPrecondition(format!(
                        "channel `{}` changed during registration; retry",
                        spec.channel_id
                    ))
                })?;
                let channel = existing_or_conflict(spec, strategy, &record.schema, &existing)?;
                Ok((self.claim(spec, channel).await?, false))
            }
        }
    }

    /// Re-registration by the ingestor that captures the channel moves the channel to it:
    /// its configuration is the operator's word on where the camera is read.
    async fn claim(&self, spec: &ChannelSpec, channel: Channel) -> Result<Channel, CoordinatorError> {
        if spec.claimed_by.is_empty() || channel.ingestor_id == spec.claimed_by {
            return Ok(channel);
        }
        let (record, revision, _) = self
            .edit(&spec.channel_id, 0, Vec::new(), |record, _| {
                if !record.is_active() || record.ingestor_id == spec.claimed_by {
                    return Ok(Edit::Keep(()));
                }
                let mut claimed = record.clone();
                claimed.ingestor_id = spec.claimed_by.clone();
                claimed.ended_unix_ms = None;
                claimed.drained_unix_ms = None;
                claimed.assigned_by = CLAIMED_BY_REGISTRATION.to_owned();
                claimed.updated_unix_ms = framefleet_common::startup::unix_time_ms();
                Ok(Edit::Write(Box::new(claimed), Vec::new(), ()))
            })
            .await?;
        tracing::info!(channel = %spec.channel_id, ingestor = %spec.claimed_by, "channel claimed by its ingestor");
        Ok(record.to_proto(revision))
    }

    /// The topics a channel of `strategy` writes to, sized for `schema`.
    async fn place(
        &self,
        channel_id: &str,
        strategy: TopicStrategy,
        pipelines: &[String],
        schema: &SchemaRecord,
        declared_bytes_per_second: u64,
    ) -> Result<Vec<TopicSpec>, CoordinatorError> {
        let frame_bytes = schema.raw_frame_bytes();
        Ok(match strategy {
            TopicStrategy::Unspecified | TopicStrategy::Dedicated => {
                vec![self.placement.dedicated(channel_id, frame_bytes)]
            }
            TopicStrategy::FanOut => pipelines
                .iter()
                .map(|pipeline| self.placement.fan_out(channel_id, pipeline, frame_bytes))
                .collect(),
            TopicStrategy::SharedPool => {
                let channels = self.all_records().await?;
                let load_of = |topic: &str| -> u64 {
                    channels
                        .iter()
                        .filter(|(record, _)| record.is_active() && record.channel_id != channel_id)
                        .filter(|(record, _)| record.topics().iter().any(|name| name == topic))
                        .map(|(record, _)| record.declared_bytes_per_second)
                        .fold(0u64, u64::saturating_add)
                };
                let chosen = self.placement.least_loaded_pool_topic(load_of);
                tracing::debug!(channel = %channel_id, topic = %chosen.name, declared_bytes_per_second, "pool topic chosen");
                vec![chosen]
            }
        })
    }

    /// Refuses a new channel id whose topics would collide in Kafka with an existing
    /// channel's (see [`validate::topic_collision_key`]), naming that channel. Checked before
    /// anything is written, whatever the broker would say.
    async fn refuse_colliding_id(&self, channel_id: &str) -> Result<(), CoordinatorError> {
        let collision_key = validate::topic_collision_key(channel_id);
        for stored in self.store.list(CHANNEL_KEY_PREFIX).await? {
            let Some(other) = stored.key.strip_prefix(CHANNEL_KEY_PREFIX) else {
                continue;
            };
            if other != channel_id && validate::topic_collision_key(other) == collision_key {
                return Err(CoordinatorError::TopicCollision {
                    channel_id: channel_id.to_owned(),
                    existing: other.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// A channel's pipelines must be registered: their consumer groups and results are what
    /// process its frames. FAILED_PRECONDITION naming the first that is not.
    async fn refuse_unregistered_pipelines(&self, pipelines: &[String]) -> Result<(), CoordinatorError> {
        for pipeline in pipelines {
            if self
                .store
                .get(&crate::pipelines::record::pipeline_key(pipeline))
                .await?
                .is_none()
            {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "`pipelines`: pipeline `{pipeline}` is not registered; create it first (`framefleet pipelines create {pipeline} …`)"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a new channel's topics when Kafka would take one of them for a topic another
    /// channel already has (see [`validate::topic_collision_key`]), whatever composed each
    /// name: a channel id alone, or a fan-out pipeline and a channel id (`framefleet.fanout.a_b.c`
    /// and `framefleet.fanout.a.b_c` are one topic to Kafka). Only pool topics are shared, by
    /// design. Checked before anything is written to etcd or Kafka.
    async fn refuse_colliding_topics(&self, channel_id: &str, topics: &[TopicSpec]) -> Result<(), CoordinatorError> {
        let wanted: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
        let same_pool_topic =
            |name: &str, other: &str| name == other && name.starts_with(framefleet_common::kafka::POOL_TOPIC_PREFIX);
        for (record, _) in self.all_records().await? {
            if record.channel_id == channel_id {
                continue;
            }
            let existing = record.topics();
            if let Some((topic, other)) =
                validate::colliding_topic(&wanted, existing.iter().map(String::as_str), same_pool_topic)
            {
                return Err(CoordinatorError::DerivedTopicCollision {
                    owner: format!("channel `{channel_id}`"),
                    topic: topic.to_owned(),
                    existing_owner: format!("channel `{}`", record.channel_id),
                    existing_topic: other.to_owned(),
                });
            }
        }
        Ok(())
    }

    pub async fn get(&self, channel_id: &str) -> Result<Channel, CoordinatorError> {
        let (record, stored) = self.get_record(channel_id).await?;
        Ok(record.to_proto(stored.mod_revision))
    }

    pub async fn get_record(&self, channel_id: &str) -> Result<(ChannelRecord, StoredValue), CoordinatorError> {
        validate::channel_id(channel_id)?;
        let stored = self
            .store
            .get(&channel_key(channel_id))
            .await?
            .ok_or_else(|| CoordinatorError::NotFound {
                kind: "channel",
                id: channel_id.to_owned(),
            })?;
        Ok((decode(&stored)?, stored))
    }

    /// Every channel with its stored value, in id order.
    pub async fn all_records(&self) -> Result<Vec<(ChannelRecord, StoredValue)>, CoordinatorError> {
        self.store
            .list(CHANNEL_KEY_PREFIX)
            .await?
            .into_iter()
            .map(|stored| decode(&stored).map(|record| (record, stored)))
            .collect()
    }

    /// One page of channels in id order. The page token is the last id of the previous page.
    pub async fn list(&self, filter: &ListFilter) -> Result<(Vec<Channel>, String), CoordinatorError> {
        if !filter.id_prefix.is_empty() {
            validate::channel_id(&filter.id_prefix)
                .map_err(|_| CoordinatorError::invalid("id_prefix", "use letters, digits, '-', '_' and '.' only"))?;
        }
        if !filter.page_token.is_empty() {
            validate::channel_id(&filter.page_token)
                .map_err(|_| CoordinatorError::invalid("page_token", "is not a token this API returned"))?;
        }
        let page_size = match filter.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(CoordinatorError::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            size => size,
        } as usize;
        let state = match ChannelState::try_from(filter.state) {
            Ok(state) => state,
            Err(_) => {
                return Err(CoordinatorError::invalid(
                    "state",
                    format!("unknown value {}", filter.state),
                ));
            }
        };
        let stored = self.store.list(&channel_key(&filter.id_prefix)).await?;
        let mut matching = stored
            .iter()
            .map(|value| decode::<ChannelRecord>(value).map(|record| (record, value.mod_revision)))
            .filter(|result| match result {
                Ok((record, _)) => {
                    record.channel_id.as_str() > filter.page_token.as_str()
                        && (state == ChannelState::Unspecified || record.state() == state)
                        && (filter.topic.is_empty() || record.topics().contains(&filter.topic))
                }
                Err(_) => true,
            });
        let mut page = Vec::with_capacity(page_size);
        for result in matching.by_ref().take(page_size) {
            let (record, revision) = result?;
            page.push(record.to_proto(revision));
        }
        let next_page_token = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => last.channel_id.clone(),
            _ => String::new(),
        };
        Ok((page, next_page_token))
    }

    pub async fn update(
        &self,
        channel_id: &str,
        change: &ChannelChange,
        expected_revision: i64,
    ) -> Result<Channel, CoordinatorError> {
        if let Some(source_uri) = &change.source_uri {
            validate::source_uri(source_uri)?;
        }
        if change.declared_bytes_per_second == Some(0) {
            return Err(CoordinatorError::invalid(
                "declared_bytes_per_second",
                "must be > 0 when given",
            ));
        }
        self.edit(channel_id, expected_revision, Vec::new(), |record, revision| {
            if !record.is_active() {
                return Err(draining(channel_id));
            }
            let mut updated = record.clone();
            if let Some(source_uri) = &change.source_uri {
                updated.source_uri.clone_from(source_uri);
            }
            if let Some(declared) = change.declared_bytes_per_second {
                updated.declared_bytes_per_second = declared;
            }
            if &updated == record {
                return Ok(Edit::Keep(Some(record.to_proto(revision))));
            }
            updated.updated_unix_ms = framefleet_common::startup::unix_time_ms();
            // A new source (or schema) is worth capturing even if the old one had ended.
            updated.ended_unix_ms = None;
            updated.drained_unix_ms = None;
            Ok(Edit::Write(Box::new(updated), Vec::new(), None))
        })
        .await
        .map(|(record, revision, kept)| kept.flatten().unwrap_or_else(|| record.to_proto(revision)))
    }

    /// Starts a drain: capture stops (the assignment is cleared in the same write) and the
    /// leader deletes the channel once the worker group has committed its frames. With
    /// `force`, deletes now. Deregistering a draining channel again is not an error.
    pub async fn deregister(
        &self,
        channel_id: &str,
        expected_revision: i64,
        force: bool,
    ) -> Result<(Channel, bool), CoordinatorError> {
        let (record, revision, answer) = self
            .edit(channel_id, expected_revision, Vec::new(), |record, revision| {
                if force {
                    return Ok(Edit::Delete(record.to_proto(revision)));
                }
                if !record.is_active() {
                    return Ok(Edit::Keep(record.to_proto(revision)));
                }
                let mut draining = record.clone();
                draining.state = ChannelState::Draining.as_str_name().to_owned();
                draining.ingestor_id.clear();
                draining.updated_unix_ms = framefleet_common::startup::unix_time_ms();
                draining.drain = Some(DrainRecord {
                    started_unix_ms: draining.updated_unix_ms,
                    marks: None,
                });
                Ok(Edit::Write(Box::new(draining), Vec::new(), record.to_proto(revision)))
            })
            .await?;
        if force {
            tracing::info!(channel = %channel_id, "channel deleted (forced)");
            return Ok((answer.unwrap_or_else(|| record.to_proto(revision)), true));
        }
        tracing::info!(channel = %channel_id, "channel draining");
        Ok((record.to_proto(revision), false))
    }

    /// Points the channel's future frames at the topics of another strategy.
    pub async fn move_to(
        &self,
        channel_id: &str,
        topic_strategy: i32,
        pipelines: &[String],
        expected_revision: i64,
    ) -> Result<Channel, CoordinatorError> {
        let strategy = validate::strategy(topic_strategy, pipelines)?;
        let (current, stored) = self.get_record(channel_id).await?;
        check_revision(channel_id, expected_revision, stored.mod_revision)?;
        self.refuse_unregistered_pipelines(pipelines).await?;
        let topic_specs = self
            .place(
                channel_id,
                strategy,
                pipelines,
                &current.schema,
                current.declared_bytes_per_second,
            )
            .await?;
        self.refuse_colliding_topics(channel_id, &topic_specs).await?;
        let largest_frame = self.largest_frame_bytes(channel_id).await?;
        for spec in &topic_specs {
            self.topics.ensure_topic(spec).await?;
            if spec.max_payload_bytes < largest_frame {
                // Older schema versions of this channel had larger frames than the current one.
                let resized = TopicSpec {
                    max_payload_bytes: largest_frame,
                    ..spec.clone()
                };
                self.topics.resize_topic(&resized).await?;
            }
        }
        let topics: Vec<String> = topic_specs.into_iter().map(|spec| spec.name).collect();
        let expected = if expected_revision == 0 {
            stored.mod_revision
        } else {
            expected_revision
        };
        self.edit(channel_id, expected, Vec::new(), |record, revision| {
            if !record.is_active() {
                return Err(draining(channel_id));
            }
            if record.topics() == topics && record.strategy() == strategy && record.pipelines == pipelines {
                return Ok(Edit::Keep(Some(record.to_proto(revision))));
            }
            let mut moved = record.clone();
            moved.topic = topics.first().cloned().unwrap_or_default();
            moved.topics.clone_from(&topics);
            moved.topic_strategy = strategy.as_str_name().to_owned();
            moved.pipelines = pipelines.to_vec();
            moved.updated_unix_ms = framefleet_common::startup::unix_time_ms();
            tracing::info!(channel = %channel_id, from = ?record.topics(), to = ?topics, "channel moved");
            Ok(Edit::Write(Box::new(moved), Vec::new(), None))
        })
        .await
        .map(|(record, revision, kept)| kept.flatten().unwrap_or_else(|| record.to_proto(revision)))
    }

    /// Read-modify-write of one channel record as a transaction on the revision read. With
    /// `expected_revision` 0 a conflict is retried on fresh data; otherwise it is
    /// FAILED_PRECONDITION. `conditions` are extra preconditions (a leader's fencing token).
    /// Returns the record as written (or read) with its revision, and what `decide` answered.
    pub async fn edit<R>(
        &self,
        channel_id: &str,
        expected_revision: i64,
        conditions: Vec<Condition>,
        mut decide: impl FnMut(&ChannelRecord, i64) -> Result<Edit<R>, CoordinatorError>,
    ) -> Result<(ChannelRecord, i64, Option<R>), CoordinatorError> {
        validate::expected_revision(expected_revision)?;
        let key = channel_key(channel_id);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (record, stored) = self.get_record(channel_id).await?;
            check_revision(channel_id, expected_revision, stored.mod_revision)?;
            let mut preconditions = conditions.clone();
            preconditions.push(Condition::ModifiedAt(key.clone(), stored.mod_revision));
            let (writes, written, answer) = match decide(&record, stored.mod_revision)? {
                Edit::Keep(answer) => return Ok((record, stored.mod_revision, Some(answer))),
                Edit::Write(updated, mut extra, answer) => {
                    let mut writes = vec![Write::Put(key.clone(), updated.encode()?)];
                    writes.append(&mut extra);
                    (writes, *updated, answer)
                }
                Edit::Delete(answer) => {
                    let mut writes = vec![Write::Delete(key.clone())];
                    for schema in self.store.list(&schema_prefix(channel_id)).await? {
                        writes.push(Write::Delete(schema.key));
                    }
                    (writes, record, answer)
                }
            };
            match self.store.commit(preconditions, writes).await? {
                CommitOutcome::Committed { revision } => return Ok((written, revision, Some(answer))),
                CommitOutcome::Conflict => {
                    let current = self.store.get(&key).await?.map(|stored| stored.mod_revision);
                    let channel_moved = current.is_some_and(|current| current != stored.mod_revision);
                    if channel_moved && expected_revision == 0 {
                        // Someone else wrote the channel between our read and write: decide again
                        // on fresh data.
                        continue;
                    }
                    return Err(match current {
                        None => CoordinatorError::NotFound {
                            kind: "channel",
                            id: channel_id.to_owned(),
                        },
                        Some(current) if channel_moved => CoordinatorError::FailedPrecondition(format!(
                            "channel `{channel_id}` changed (revision {current}, expected {}); read it again",
                            stored.mod_revision
                        )),
                        // The channel is as read, so an extra precondition (leadership) failed:
                        // retrying cannot help.
                        Some(_) => CoordinatorError::FailedPrecondition(format!(
                            "a precondition of the change to channel `{channel_id}` no longer holds"
                        )),
                    });
                }
            }
        }
        Err(CoordinatorError::FailedPrecondition(format!(
            "channel `{channel_id}` kept changing; gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )))
    }
}

fn check_revision(channel_id: &str, expected: i64, actual: i64) -> Result<(), CoordinatorError> {
    crate::error::check_revision("channel", channel_id, expected, actual)
}

fn draining(channel_id: &str) -> CoordinatorError {
    CoordinatorError::FailedPrecondition(format!("channel `{channel_id}` is draining; it cannot change any more"))
}

fn existing_or_conflict(
    requested: &ChannelSpec,
    strategy: TopicStrategy,
    schema: &SchemaRecord,
    existing: &StoredValue,
) -> Result<Channel, CoordinatorError> {
    let stored: ChannelRecord = decode(existing)?;
    let same = stored.source_uri == requested.source_uri
        && stored.schema.same_shape(schema)
        && stored.strategy() == strategy
        && stored.pipelines == requested.pipelines;
    if same {
        return Ok(stored.to_proto(existing.mod_revision));
    }
    Err(CoordinatorError::AlreadyExists {
        kind: "channel",
        id: requested.channel_id.clone(),
    })
}

#[cfg(test)]
mod tests;
