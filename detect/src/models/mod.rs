//! One file per detector architecture (as candle-transformers keeps its models): the layers
//! built from named tensors, the forward pass and the architecture's own post-processing.

pub mod ssdlite_mobilenet_v2;

use crate::architecture::Architecture;
use crate::error::DetectError;

/// Every architecture this build knows.
pub fn known() -> Vec<&'static dyn Architecture> {
    vec![&ssdlite_mobilenet_v2::SsdliteMobilenetV2]
}

/// The architecture called `name`. Errors: no such architecture in this build.
pub fn by_name(name: &str) -> Result<&'static dyn Architecture, DetectError> {
    known()
        .into_iter()
        .find(|architecture| architecture.name() == name)
        .ok_or_else(|| DetectError::UnknownArchitecture {
            name: name.to_owned(),
            known: known()
                .iter()
                .map(|architecture| architecture.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}
