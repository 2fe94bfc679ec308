//! What the worker knows of channels: each channel as last listed by the coordinator, and
//! every schema version fetched so far.

use framefleet_proto::v1::{Channel, FrameSchema};
use std::collections::{BTreeMap, HashMap};

/// What the worker knows of channels: each channel as last listed, and every schema version
/// fetched so far. Versions never change once written, so they are cached for good.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub channels: HashMap<String, Channel>,
    /// channel id → version → schema; nested so a lookup by `&str` allocates nothing.
    pub schemas: HashMap<String, BTreeMap<u32, FrameSchema>>,
}

impl Catalog {
    pub fn from_channels(channels: impl IntoIterator<Item = Channel>) -> Self {
        let mut catalog = Self::default();
        for channel in channels {
            catalog.insert_channel(channel);
        }
        catalog
    }

    /// Records a channel and, for free, its current schema version.
    pub fn insert_channel(&mut self, channel: Channel) {
        if let Some(schema) = &channel.schema {
            self.schemas
                .entry(channel.channel_id.clone())
                .or_default()
                .insert(schema.version, *schema);
        }
        self.channels.insert(channel.channel_id.clone(), channel);
    }

    pub fn schema(&self, channel_id: &str, version: u32) -> Option<&FrameSchema> {
        self.schemas.get(channel_id)?.get(&version)
    }
}
