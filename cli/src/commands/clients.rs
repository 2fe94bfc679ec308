//! The gRPC clients the commands share.

use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;

pub(super) type Channels = ChannelServiceClient<CoordinatorChannel>;
pub(super) type Fleet = FleetServiceClient<CoordinatorChannel>;
pub(super) type Pipelines = PipelineServiceClient<CoordinatorChannel>;
