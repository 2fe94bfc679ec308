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

    /// Who must consume this channel's frames, and from which topics: see [`channel_readers`].
    pub fn readers(&self) -> Vec<Reader> {
        channel_readers(
            self.topic_strategy == i32::from(v1::TopicStrategy::FanOut),
            self.all_topics(),
            &self.pipelines,
        )
    }

    /// The topics of this channel that the workers serving `pipeline` consume (`None`: the
    /// workers that serve no pipeline); empty when those workers have no part in it.
    pub fn topics_for(&self, pipeline: Option<&str>) -> Vec<String> {
        self.readers()
            .into_iter()
            .filter(|reader| reader.pipeline.as_deref() == pipeline)
            .flat_map(|reader| reader.topics)
            .collect()
    }
}

/// A consumer of a channel's frames: the workers serving one pipeline (each pipeline has a
/// consumer group of its own), or, with `pipeline` `None`, the workers that serve none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub pipeline: Option<String>,
    pub topics: Vec<String>,
}

/// Who consumes a channel: a channel that names no pipelines is read by the workers serving
/// none; otherwise each named pipeline reads every topic, except under fan-out, where the
/// i-th pipeline reads the i-th topic (its own copy of the frames).
pub fn channel_readers(fan_out: bool, topics: &[String], pipelines: &[String]) -> Vec<Reader> {
    if pipelines.is_empty() {
        return vec![Reader {
            pipeline: None,
            topics: topics.to_vec(),
        }];
    }
    pipelines
        .iter()
        .enumerate()
        .map(|(index, pipeline)| Reader {
            pipeline: Some(pipeline.clone()),
            topics: if fan_out {
                topics.get(index).cloned().into_iter().collect()
            } else {
                topics.to_vec()
            },
        })
        .collect()
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
