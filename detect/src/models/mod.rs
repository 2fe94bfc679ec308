//! One file per detector architecture (as candle-transformers keeps its models): the layers
//! built from named tensors, the forward pass and the architecture's own post-processing.

pub mod ssdlite_mobilenet_v2;
