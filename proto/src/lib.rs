//! The wire contracts of framefleet: the gRPC control-plane API (generated from
//! `proto/framefleet/v1/*.proto`) and the Kafka frame and result record formats in [`wire`].
//!
//! Nothing here talks to a network or a broker; every part of the system depends on this
//! crate, so it must stay small and free of runtime dependencies.

pub mod client;
pub mod wire;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
    tonic::include_proto!("framefleet.v1");
}

/// Encoded `FileDescriptorSet` of every framefleet service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("framefleet_descriptor");

impl v1::Channel {
    /// Every topic the channel's frames go to: `topics`, or `topic` alone for a record written
    /// before fan-out existed.
    pub fn all_topics(&self) -> &[String] {
        if self.topics.is_empty() {
            std::slice::from_ref(&self.topic)
        } else {
            &self.topics
        }
    }
}

impl v1::PixelFormat {
    /// Colour channels of one pixel: 1 for `GRAY8`, 3 for `RGB24` and `BGR24`; `None` for
    /// `UNSPECIFIED`, which names no layout.
    pub fn channel_count(self) -> Option<u32> {
        match self {
            Self::Unspecified => None,
            Self::Gray8 => Some(1),
            Self::Rgb24 | Self::Bgr24 => Some(3),
        }
    }
}

impl v1::FrameSchema {
    /// Bytes of one decoded frame (width × height × channels); saturates instead of overflowing
    /// so absurd declared sizes are caught by validation rather than wrapping.
    pub fn raw_frame_bytes(&self) -> u64 {
        u64::from(self.width)
            .saturating_mul(u64::from(self.height))
            .saturating_mul(u64::from(self.channels))
    }
}
