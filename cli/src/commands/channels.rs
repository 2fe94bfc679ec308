//! `framefleet channels …` (ChannelService).

use super::clients::Channels;
use crate::args::{ChannelsCommand, StateArg};
use crate::failure::Failure;
use crate::output::{outln, print_channels};
use framefleet_proto::v1::{
    Channel, ChannelState, DeregisterChannelRequest, GetChannelRequest, ListChannelsRequest, MoveChannelRequest,
    RegisterChannelRequest, UpdateChannelRequest,
};

pub(super) async fn run(command: ChannelsCommand, channels: &mut Channels, json: bool) -> Result<(), Failure> {
    match command {
        ChannelsCommand::List {
            prefix,
            state,
            topic,
            page_size,
            page_token,
        } => {
            let state = match state {
                None => ChannelState::Unspecified,
                Some(StateArg::Active) => ChannelState::Active,
                Some(StateArg::Draining) => ChannelState::Draining,
            };
            let mut request = ListChannelsRequest {
                id_prefix: prefix,
                page_size: page_size.unwrap_or(1000),
                page_token,
                state: state.into(),
                topic,
            };
            let mut listed = Vec::new();
            loop {
                let page = channels.list_channels(request.clone()).await?.into_inner();
                listed.extend(page.channels);
                if page_size.is_some() || page.next_page_token.is_empty() {
                    if page_size.is_some() && !page.next_page_token.is_empty() {
                        eprintln!("next page: --page-token {}", page.next_page_token);
                    }
                    break;
                }
                request.page_token = page.next_page_token;
            }
            print_channels(json, &listed);
        }
        ChannelsCommand::Get { channel_id } => {
            let channel = channels
                .get_channel(GetChannelRequest { channel_id })
                .await?
                .into_inner();
            print_channels(json, std::slice::from_ref(&channel));
        }
        ChannelsCommand::Register {
            channel_id,
            source,
            schema,
            placement,
            bytes_per_second,
            ingestor,
        } => {
            let request = RegisterChannelRequest {
                channel_id,
                source_uri: source,
                schema: Some(schema.to_proto()),
                topic_strategy: placement.strategy(),
                pipelines: placement.pipelines.clone(),
                declared_bytes_per_second: bytes_per_second,
                ingestor_id: ingestor.unwrap_or_default(),
            };
            let response = channels.register_channel(request).await?.into_inner();
            let registered: Vec<_> = response.channel.into_iter().collect();
            print_channels(json, &registered);
            if !json {
                outln!(
                    "{}",
                    if response.created {
                        "created"
                    } else {
                        "already registered (identical)"
                    }
                );
            }
        }
        ChannelsCommand::Update {
            channel_id,
            source,
            bytes_per_second,
            expected_revision,
        } => {
            let request = UpdateChannelRequest {
                channel_id,
                source_uri: source,
                declared_bytes_per_second: bytes_per_second,
                expected_revision,
            };
            let channel = channels.update_channel(request).await?.into_inner();
            print_channels(json, std::slice::from_ref(&channel));
        }
        ChannelsCommand::Deregister {
            channel_id,
            force,
            expected_revision,
        } => {
            let request = DeregisterChannelRequest {
                channel_id,
                expected_revision,
                force,
            };
            let response = channels.deregister_channel(request).await?.into_inner();
            let channel: Vec<_> = response.channel.into_iter().collect();
            print_channels(json, &channel);
            if !json {
                outln!("{}", if response.deleted { "deleted" } else { "draining" });
            }
        }
        ChannelsCommand::Move {
            channel_id,
            placement,
            expected_revision,
        } => {
            let request = MoveChannelRequest {
                channel_id,
                topic_strategy: placement.strategy(),
                pipelines: placement.pipelines.clone(),
                expected_revision,
            };
            let channel = channels.move_channel(request).await?.into_inner();
            print_channels(json, std::slice::from_ref(&channel));
        }
    }
    Ok(())
}

/// Every channel, all pages.
pub(super) async fn all_channels(channels: &mut Channels) -> Result<Vec<Channel>, tonic::Status> {
    let mut request = ListChannelsRequest {
        page_size: 1000,
        ..ListChannelsRequest::default()
    };
    let mut listed = Vec::new();
    loop {
        let page = channels.list_channels(request.clone()).await?.into_inner();
        listed.extend(page.channels);
        if page.next_page_token.is_empty() {
            return Ok(listed);
        }
        request.page_token = page.next_page_token;
    }
}
