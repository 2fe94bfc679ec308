//! The gRPC clients the commands share.

use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;

pub(super) type Channels = ChannelServiceClient<CoordinatorChannel>;
pub(super) type Fleet = FleetServiceClient<CoordinatorChannel>;
