//! gRPC adapters: validate the envelope, delegate to the domain, map errors in one place
//! (`From<CoordinatorError> for Status`). No domain logic lives here.

use crate::assignments::{WatchScope, spawn_watch, validate_after_revision};
use crate::channels::{ChannelChange, ChannelRegistry, ChannelSpec, ListFilter};
use crate::error::CoordinatorError;
use crate::fleet::FleetRegistry;
use crate::grpc::auth::policy::{Principal, Role, own_report, principal};
use crate::kafka::offsets::{KafkaInspector, TopicLoad};
use crate::kafka::topics::TopicAdmin;
use crate::leader::Election;
use crate::members::Membership;
use crate::store::MetadataStore;
use framefleet_proto::v1::assignment_service_server::AssignmentService;
use framefleet_proto::v1::channel_service_server::ChannelService;
use framefleet_proto::v1::fleet_service_server::FleetService;
use framefleet_proto::v1::schema_service_server::SchemaService;
use framefleet_proto::v1::{
    AddSchemaVersionRequest, AssignmentUpdate, Channel, DeregisterChannelRequest, DeregisterChannelResponse,
    FleetStatus, FrameSchema, GetChannelRequest, GetFleetStatusRequest, GetSchemaRequest, IngestorReport,
    ListChannelsRequest, ListChannelsResponse, ListSchemaVersionsRequest, ListSchemaVersionsResponse,
    MoveChannelRequest, RegisterChannelRequest, RegisterChannelResponse, ReportAck, UpdateChannelRequest,
    WatchAssignmentsRequest, WorkerReport,
};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct ChannelApi<S, T> {
    pub channels: Arc<ChannelRegistry<S, T>>,
}

#[tonic::async_trait]
impl<S: MetadataStore, T: TopicAdmin> ChannelService for ChannelApi<S, T> {
    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel_id))]
    async fn register_channel(
        &self,
        request: Request<RegisterChannelRequest>,
    ) -> Result<Response<RegisterChannelResponse>, Status> {
        const CALL: &str = "ChannelService/RegisterChannel";
        let principal = principal(&request).cloned();
        let request = request.into_inner();
        // An ingestor registers channels for itself only, and claims only channels it owns.
        if let Some(principal) = &principal
            && principal.is_other_ingestor(&request.ingestor_id)
        {
            let what = format!("the claim on channel `{}`", request.channel_id);
            return Err(principal.not_its_own(CALL, &what, &request.ingestor_id));
        }
        let spec = ChannelSpec {
            channel_id: request.channel_id,
            source_uri: request.source_uri,
            schema: request.schema,
            topic_strategy: request.topic_strategy,
            pipelines: request.pipelines,
            declared_bytes_per_second: request.declared_bytes_per_second,
            claimed_by: request.ingestor_id,
            claimant_must_own: principal
                .as_ref()
                .is_some_and(|principal| principal.role == Role::Ingestor),
        };
        let (channel, created) = self
            .channels
            .register(&spec)
            .await
            .map_err(|error| match (error, &principal) {
                (CoordinatorError::NotOwner { channel_id, owner }, Some(principal)) => {
                    principal.not_its_own(CALL, &format!("channel `{channel_id}`"), &owner)
                }
                (error, _) => Status::from(error),
            })?;
        Ok(Response::new(RegisterChannelResponse {
            channel: Some(channel),
            created,
        }))
    }

    async fn get_channel(&self, request: Request<GetChannelRequest>) -> Result<Response<Channel>, Status> {
        Ok(Response::new(
            self.channels.get(&request.into_inner().channel_id).await?,
        ))
    }

    async fn list_channels(
        &self,
        request: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let request = request.into_inner();
        let filter = ListFilter {
            id_prefix: request.id_prefix,
            page_size: request.page_size,
            page_token: request.page_token,
            state: request.state,
            topic: request.topic,
        };
        let (channels, next_page_token) = self.channels.list(&filter).await?;
        Ok(Response::new(ListChannelsResponse {
            channels,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel_id))]
    async fn update_channel(&self, request: Request<UpdateChannelRequest>) -> Result<Response<Channel>, Status> {
        let principal = principal(&request).cloned();
        let mut request = request.into_inner();
        request.expected_revision = self
            .own_channel(
                principal.as_ref(),
                "ChannelService/UpdateChannel",
                &request.channel_id,
                request.expected_revision,
            )
            .await?;
        let change = ChannelChange {
            source_uri: request.source_uri,
            declared_bytes_per_second: request.declared_bytes_per_second,
        };
        Ok(Response::new(
            self.channels
                .update(&request.channel_id, &change, request.expected_revision)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel_id))]
    async fn deregister_channel(
        &self,
        request: Request<DeregisterChannelRequest>,
    ) -> Result<Response<DeregisterChannelResponse>, Status> {
        let principal = principal(&request).cloned();
        let mut request = request.into_inner();
        request.expected_revision = self
            .own_channel(
                principal.as_ref(),
                "ChannelService/DeregisterChannel",
                &request.channel_id,
                request.expected_revision,
            )
            .await?;
        let (channel, deleted) = self
            .channels
            .deregister(&request.channel_id, request.expected_revision, request.force)
            .await?;
        Ok(Response::new(DeregisterChannelResponse {
            channel: Some(channel),
            deleted,
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel_id))]
    async fn move_channel(&self, request: Request<MoveChannelRequest>) -> Result<Response<Channel>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.channels
                .move_to(
                    &request.channel_id,
                    request.topic_strategy,
                    &request.pipelines,
                    request.expected_revision,
                )
                .await?,
        ))
    }
}

impl<S: MetadataStore, T: TopicAdmin> ChannelApi<S, T> {
    /// For an ingestor's credential, refuses `call` on a channel another ingestor owns and
    /// returns the revision the change must apply to: the one whose owner was checked (owners
    /// never change, but the channel could be deleted and registered again meanwhile), or the
    /// caller's own `expected_revision`. Other callers pass unchecked.
    async fn own_channel(
        &self,
        principal: Option<&Principal>,
        call: &str,
        channel_id: &str,
        expected_revision: i64,
    ) -> Result<i64, Status> {
        let Some(principal) = principal.filter(|principal| principal.role == Role::Ingestor) else {
            return Ok(expected_revision);
        };
        let channel = self.channels.get(channel_id).await?;
        if principal.is_other_ingestor(&channel.owner) {
            return Err(principal.not_its_own(call, &format!("channel `{channel_id}`"), &channel.owner));
        }
        Ok(if expected_revision == 0 {
            channel.revision
        } else {
            expected_revision
        })
    }
}

pub struct SchemaApi<S, T> {
    pub channels: Arc<ChannelRegistry<S, T>>,
}

#[tonic::async_trait]
impl<S: MetadataStore, T: TopicAdmin> SchemaService for SchemaApi<S, T> {
    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel_id))]
    async fn add_schema_version(
        &self,
        request: Request<AddSchemaVersionRequest>,
    ) -> Result<Response<FrameSchema>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.channels
                .add_schema_version(
                    &request.channel_id,
                    request.schema.as_ref(),
                    request.allow_frame_size_change,
                    request.expected_revision,
                )
                .await?,
        ))
    }

    async fn get_schema(&self, request: Request<GetSchemaRequest>) -> Result<Response<FrameSchema>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.channels.get_schema(&request.channel_id, request.version).await?,
        ))
    }

    async fn list_schema_versions(
        &self,
        request: Request<ListSchemaVersionsRequest>,
    ) -> Result<Response<ListSchemaVersionsResponse>, Status> {
        let schemas = self.channels.list_schemas(&request.into_inner().channel_id).await?;
        Ok(Response::new(ListSchemaVersionsResponse { schemas }))
    }
}

pub struct AssignmentApi<S> {
    pub store: S,
    pub shutdown: tokio_util::sync::CancellationToken,
}

type UpdateStream = Pin<Box<dyn futures::Stream<Item = Result<AssignmentUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl<S: MetadataStore + Clone> AssignmentService for AssignmentApi<S> {
    type WatchAssignmentsStream = UpdateStream;

    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let request = request.into_inner();
        validate_after_revision(&self.store, request.after_revision).await?;
        if !request.ingestor_id.is_empty() {
            crate::channels::validate::process_id("ingestor_id", &request.ingestor_id)?;
        }
        let scope = WatchScope {
            ingestor_id: request.ingestor_id,
        };
        let updates = spawn_watch(self.store.clone(), scope, request.after_revision, self.shutdown.clone());
        let stream = tokio_stream::wrappers::ReceiverStream::new(updates).map(|update| update.map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Clone by hand: every field is shared, whatever `T` is.
impl<S: Clone, T> Clone for FleetApi<S, T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            fleet: Arc::clone(&self.fleet),
            members: Arc::clone(&self.members),
            channels: Arc::clone(&self.channels),
            inspector: Arc::clone(&self.inspector),
            election: Arc::clone(&self.election),
            coordinator_id: self.coordinator_id.clone(),
            kafka: self.kafka.clone(),
        }
    }
}

/// Refuses a report that an ingestor's credential sends as another ingestor ([`own_report`]), or
/// with the ledger of a channel that another ingestor (or no ingestor) owns; reports of other
/// roles, and every report with authentication off, pass. `owned` holds the channels already
/// found to be the principal's, so a stream looks each up once (a channel's owner never
/// changes). A ledger of a channel that does not exist passes: an ingestor still reports the
/// final counts of a channel deregistered under it.
async fn own_report_and_ledgers<S: MetadataStore, T: TopicAdmin>(
    channels: &ChannelRegistry<S, T>,
    principal: Option<&Principal>,
    call: &str,
    report: &IngestorReport,
    owned: &mut HashSet<String>,
) -> Result<(), Status> {
    own_report(principal, call, &report.ingestor_id)?;
    let Some(principal) = principal.filter(|principal| principal.role == Role::Ingestor) else {
        return Ok(());
    };
    for ledger in &report.channels {
        if owned.contains(&ledger.channel_id) {
            continue;
        }
        match channels.get_record(&ledger.channel_id).await {
            Ok((record, _)) if principal.is_other_ingestor(record.owner()) => {
                let what = format!("the ledger of channel `{}`", ledger.channel_id);
                return Err(principal.not_its_own(call, &what, record.owner()));
            }
            Ok(_) => {
                owned.insert(ledger.channel_id.clone());
            }
            Err(CoordinatorError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

pub struct FleetApi<S, T> {
    /// Where the channel ledgers are kept.
    pub store: S,
    pub fleet: Arc<FleetRegistry>,
    pub members: Arc<Membership<S>>,
    pub channels: Arc<ChannelRegistry<S, T>>,
    pub inspector: Arc<KafkaInspector>,
    pub election: Arc<Election<S>>,
    pub coordinator_id: String,
    pub kafka: framefleet_proto::v1::KafkaSettings,
}

#[tonic::async_trait]
impl<S: MetadataStore + Clone, T: TopicAdmin> FleetService for FleetApi<S, T> {
    async fn report_ingestor(&self, request: Request<IngestorReport>) -> Result<Response<ReportAck>, Status> {
        let call = "FleetService/ReportIngestor";
        let mut owned = HashSet::new();
        own_report_and_ledgers(&self.channels, principal(&request), call, request.get_ref(), &mut owned).await?;
        self.fleet.record_ingestor(request.into_inner())?;
        Ok(Response::new(ReportAck {}))
    }

    async fn report_worker(&self, request: Request<WorkerReport>) -> Result<Response<ReportAck>, Status> {
        self.fleet.record_worker(request.into_inner())?;
        Ok(Response::new(ReportAck {}))
    }

    async fn stream_worker_reports(
        &self,
        request: Request<Streaming<WorkerReport>>,
    ) -> Result<Response<ReportAck>, Status> {
        // A worker's counts live in Kafka (its results and committed offsets): nothing to store.
        self.members
            .serve_stream(&self.fleet, request.into_inner(), async |_| Ok(()))
            .await?;
        Ok(Response::new(ReportAck {}))
    }

    async fn stream_ingestor_reports(
        &self,
        request: Request<Streaming<IngestorReport>>,
    ) -> Result<Response<ReportAck>, Status> {
        let store = &self.store;
        let channels = &self.channels;
        let call = "FleetService/StreamIngestorReports";
        // A stream keeps the member id of its first report, so checking each is checking that.
        let principal = principal(&request).cloned();
        let owned = tokio::sync::Mutex::new(HashSet::new());
        let reports = Box::pin(request.into_inner().then(|report| async {
            let report = report?;
            own_report_and_ledgers(channels, principal.as_ref(), call, &report, &mut *owned.lock().await).await?;
            Ok(report)
        }));
        self.members
            .serve_stream(&self.fleet, reports, async |last: IngestorReport| {
                crate::ledgers::store_final(store, last).await
            })
            .await?;
        Ok(Response::new(ReportAck {}))
    }

    async fn get_fleet_status(
        &self,
        _request: Request<GetFleetStatusRequest>,
    ) -> Result<Response<FleetStatus>, Status> {
        Ok(Response::new(self.status().await?))
    }
}

impl<S: MetadataStore + Clone, T: TopicAdmin> FleetApi<S, T> {
    /// The fleet as this coordinator sees it now: reports in memory, registrations in etcd,
    /// topic metrics from Kafka (a Kafka failure is returned beside the rest, not instead).
    pub async fn status(&self) -> Result<FleetStatus, CoordinatorError> {
        let registered = self.members.registered_workers().await?;
        let mut registered_ingestors: Vec<String> = self.members.registered_ingestors().await?.into_iter().collect();
        registered_ingestors.sort();
        let (workers, frames_processed, frames_per_second) = self.fleet.workers(&registered);
        let ingestors = self.fleet.ingestors();
        // Every topic any channel writes to, once per reader (each pipeline's group commits
        // its own offsets), with the frame rate its active channels declare.
        let mut loads: BTreeMap<(String, Option<String>), f64> = BTreeMap::new();
        for (record, _) in self.channels.all_records().await? {
            let fps = if record.is_active() { record.schema.fps } else { 0.0 };
            for reader in record.readers() {
                for topic in reader.topics {
                    *loads.entry((topic, reader.pipeline.clone())).or_default() += fps;
                }
            }
        }
        let loads = loads
            .into_iter()
            .map(|((topic, pipeline), frames_per_second)| TopicLoad {
                topic,
                pipeline,
                frames_per_second,
            })
            .collect();
        // Kafka trouble must not hide the reports we do have: it is returned beside them.
        let (topics, kafka_error) = match self.inspector.topic_metrics(loads).await {
            Ok(metrics) => (metrics, String::new()),
            Err(error) => (Vec::new(), error.to_string()),
        };
        Ok(FleetStatus {
            workers,
            ingestors,
            topics,
            frames_processed,
            frames_per_second,
            kafka_error,
            channels: self.fleet.channels(),
            leader_id: self.election.leader_id().await?,
            coordinator_id: self.coordinator_id.clone(),
            registered_ingestors,
            ledgers: crate::ledgers::list(&self.store).await?,
            kafka: Some(self.kafka.clone()),
        })
    }
}
