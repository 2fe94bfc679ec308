//! Reads the weights out of a TensorFlow frozen graph (`GraphDef`, the `.pb` of the TF1
//! Object Detection API) without TensorFlow: a frozen graph is plain protobuf, and its weights
//! are the `value` attributes of its `Const` nodes. Only the fields needed for that are
//! declared here (field numbers from TensorFlow's `graph.proto`, `node_def.proto`,
//! `attr_value.proto`, `tensor.proto` and `tensor_shape.proto`); prost skips the rest.
//!
//! This module never evaluates a graph: the network is written out in candle, and the
//! converter checks every constant it takes against that architecture's list.

use prost::Message;

/// `tensorflow.DataType.DT_FLOAT`.
const DT_FLOAT: i32 = 1;

#[derive(Clone, PartialEq, Message)]
struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeDef>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeDef {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    op: String,
    #[prost(map = "string, message", tag = "5")]
    attr: std::collections::HashMap<String, AttrValue>,
}

/// `AttrValue` is a oneof; only its `tensor` member matters here, and a oneof member is
/// encoded exactly like a plain optional field.
#[derive(Clone, PartialEq, Message)]
struct AttrValue {
    #[prost(message, optional, tag = "8")]
    tensor: Option<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", tag = "4")]
    tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    float_val: Vec<f32>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
}

#[derive(Clone, PartialEq, Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

/// A `float32` constant of a frozen graph: its node name, shape and values (row-major, as
/// TensorFlow stores them; convolution kernels are HWIO, depthwise kernels HWC1).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphConstant {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("not a TensorFlow GraphDef: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("constant `{name}` has a negative dimension in its shape {shape:?}")]
    NegativeDimension { name: String, shape: Vec<i64> },
    #[error("constant `{name}` of shape {shape:?} holds {bytes} bytes of content, expected {expected}")]
    ContentSize {
        name: String,
        shape: Vec<usize>,
        bytes: usize,
        expected: usize,
    },
    #[error("constant `{name}` of shape {shape:?} holds {values} float values (neither 1 nor {expected})")]
    ValueCount {
        name: String,
        shape: Vec<usize>,
        values: usize,
        expected: usize,
    },
}

/// Every `float32` `Const` node of the serialized `GraphDef` in `bytes`, in graph order.
/// Values come from `tensor_content` (little-endian bytes) or `float_val` (where a single
/// value fills the whole shape, TensorFlow's own rule).
///
/// Errors: the bytes are not a `GraphDef`, or a constant's content does not fit its shape.
pub fn float_constants(bytes: &[u8]) -> Result<Vec<GraphConstant>, GraphError> {
    let graph = GraphDef::decode(bytes)?;
    let mut constants = Vec::new();
    for node in graph.node {
        if node.op != "Const" {
            continue;
        }
        let Some(tensor) = node.attr.get("value").and_then(|value| value.tensor.as_ref()) else {
            continue;
        };
        if tensor.dtype != DT_FLOAT {
            continue;
        }
        let dims: Vec<i64> = tensor
            .tensor_shape
            .as_ref()
            .map(|shape| shape.dim.iter().map(|dim| dim.size).collect())
            .unwrap_or_default();
        let shape: Vec<usize> = dims
            .iter()
            .map(|&size| usize::try_from(size))
            .collect::<Result<_, _>>()
            .map_err(|_| GraphError::NegativeDimension {
                name: node.name.clone(),
                shape: dims.clone(),
            })?;
        let expected: usize = shape.iter().product();
        let values = if !tensor.tensor_content.is_empty() {
            if tensor.tensor_content.len() != expected * 4 {
                return Err(GraphError::ContentSize {
                    name: node.name,
                    shape,
                    bytes: tensor.tensor_content.len(),
                    expected: expected * 4,
                });
            }
            tensor
                .tensor_content
                .chunks_exact(4)
                .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                .collect()
        } else if tensor.float_val.len() == expected {
            tensor.float_val.clone()
        } else if tensor.float_val.len() == 1 {
            vec![tensor.float_val[0]; expected]
        } else {
            return Err(GraphError::ValueCount {
                name: node.name,
                shape,
                values: tensor.float_val.len(),
                expected,
            });
        };
        constants.push(GraphConstant {
            name: node.name,
            shape,
            values,
        });
    }
    Ok(constants)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_with(tensor: TensorProto) -> Vec<u8> {
        let mut attr = std::collections::HashMap::new();
        attr.insert("value".to_owned(), AttrValue { tensor: Some(tensor) });
        GraphDef {
            node: vec![
                NodeDef {
                    name: "w".to_owned(),
                    op: "Const".to_owned(),
                    attr,
                },
                NodeDef {
                    name: "w/read".to_owned(),
                    op: "Identity".to_owned(),
                    attr: Default::default(),
                },
            ],
        }
        .encode_to_vec()
    }

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: dims.iter().map(|&size| Dim { size }).collect(),
        })
    }

    #[test]
    fn reads_content_bytes_and_float_values() {
        let content: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = graph_with(TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: shape(&[2, 2]),
            tensor_content: content,
            float_val: vec![],
        });
        let constants = float_constants(&bytes).expect("valid graph");
        assert_eq!(constants.len(), 1, "only the Const node");
        assert_eq!(constants[0].name, "w");
        assert_eq!(constants[0].shape, vec![2, 2]);
        assert_eq!(constants[0].values, vec![1.5, -2.0, 3.25, 0.0]);

        let splat = graph_with(TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: shape(&[3]),
            tensor_content: vec![],
            float_val: vec![0.5],
        });
        assert_eq!(float_constants(&splat).expect("valid")[0].values, vec![0.5; 3]);
    }

    #[test]
    fn refuses_content_that_does_not_fit_its_shape() {
        let bytes = graph_with(TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: shape(&[2, 2]),
            tensor_content: vec![0; 12],
            float_val: vec![],
        });
        let error = float_constants(&bytes).expect_err("12 bytes for 4 floats");
        assert!(error.to_string().contains("`w`"), "{error}");
        assert!(float_constants(b"\xff\xff\xff not protobuf").is_err());
    }

    #[test]
    fn skips_constants_of_other_types() {
        let bytes = graph_with(TensorProto {
            dtype: 3, // DT_INT32
            tensor_shape: shape(&[1]),
            tensor_content: vec![0; 4],
            float_val: vec![],
        });
        assert!(float_constants(&bytes).expect("valid").is_empty());
    }
}
