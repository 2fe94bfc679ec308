//! gRPC adapters: validate the envelope, delegate to the domain, map errors in one place
//! (`From<CoordinatorError> for Status`). No domain logic lives here.

use crate::channels::ChannelRegistry;
use crate::fleet::{FleetRegistry, KafkaInspector};
use crate::members::Membership;
use crate::store::MetadataStore;
use crate::topics::TopicAdmin;
use framefleet_proto::v1::channel_service_server::ChannelService;
use framefleet_proto::v1::fleet_service_server::FleetService;
use framefleet_proto::v1::{
    Channel, FleetStatus, GetChannelRequest, GetFleetStatusRequest, IngestorReport, ListChannelsRequest,
    ListChannelsResponse, RegisterChannelRequest, RegisterChannelResponse, ReportAck, WorkerReport,
};
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
        let request = request.into_inner();
        let (channel, created) = self
            .channels
            .register(&request.channel_id, &request.source_uri, request.schema.as_ref())
            .await?;
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
        let channels = self.channels.list(&request.into_inner().id_prefix).await?;
        Ok(Response::new(ListChannelsResponse { channels }))
    }
}

pub struct FleetApi<S, T> {
    pub fleet: Arc<FleetRegistry>,
    pub members: Arc<Membership<S>>,
    pub channels: Arc<ChannelRegistry<S, T>>,
    pub inspector: Arc<KafkaInspector>,
}

#[tonic::async_trait]
impl<S: MetadataStore, T: TopicAdmin> FleetService for FleetApi<S, T> {
    async fn report_ingestor(&self, request: Request<IngestorReport>) -> Result<Response<ReportAck>, Status> {
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
        self.members
            .serve_worker_stream(&self.fleet, request.into_inner())
            .await?;
        Ok(Response::new(ReportAck {}))
    }

    async fn get_fleet_status(
        &self,
        _request: Request<GetFleetStatusRequest>,
    ) -> Result<Response<FleetStatus>, Status> {
        let registered = self.members.registered_workers().await?;
        let (workers, frames_processed, frames_per_second) = self.fleet.workers(&registered);
        let ingestors = self.fleet.ingestors();
        let topics: Vec<String> = self
            .channels
            .list("")
            .await?
            .into_iter()
            .map(|channel| channel.topic)
            .collect();
        // Kafka trouble must not hide the reports we do have: it is returned beside them.
        let (topics, kafka_error) = match self.inspector.topic_metrics(topics).await {
            Ok(metrics) => (metrics, String::new()),
            Err(error) => (Vec::new(), error.to_string()),
        };
        Ok(Response::new(FleetStatus {
            workers,
            ingestors,
            topics,
            frames_processed,
            frames_per_second,
            kafka_error,
        }))
    }
}
