use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Server reflection needs the descriptors so grpcurl works without .proto files.
        .file_descriptor_set_path(out_dir.join("framefleet_descriptor.bin"))
        .compile_protos(
            &["proto/framefleet/v1/control.proto", "proto/framefleet/v1/records.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
