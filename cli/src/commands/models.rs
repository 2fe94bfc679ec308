//! `framefleet models …` (ModelService).

use crate::args::ModelsCommand;
use crate::failure::Failure;
use crate::output::{out, outln};
use crate::render;
use framefleet_common::model_upload::ModelUpload;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::model_service_client::ModelServiceClient;
use framefleet_proto::v1::{GetModelRequest, ListModelVersionsRequest, ListModelsRequest};

pub(super) async fn run(
    command: ModelsCommand,
    models: &mut ModelServiceClient<CoordinatorChannel>,
    json: bool,
) -> Result<(), Failure> {
    match command {
        ModelsCommand::Push {
            name,
            path,
            description,
        } => {
            let upload = ModelUpload::read(&path).map_err(|error| Failure::Other(error.into(), 2))?;
            let size = upload.weights.len();
            let response = framefleet_common::model_upload::push(models, &upload, &name, &description).await?;
            let model = response.model.unwrap_or_default();
            if json {
                outln!("{}", render::model_pushed_json(&model, response.created));
            } else {
                let what = if response.created {
                    "registered"
                } else {
                    "unchanged (those weights are its newest version)"
                };
                outln!(
                    "model {} version {} {what}: {size} bytes, sha256 {}, {} chunks in {}",
                    model.name,
                    model.version,
                    model.sha256,
                    model.chunk_offsets.len(),
                    model.topic
                );
            }
        }
        ModelsCommand::Get { name, version } => {
            let model = models.get_model(GetModelRequest { name, version }).await?.into_inner();
            print(json, &[model]);
        }
        ModelsCommand::List { prefix } => {
            let listed = models
                .list_models(ListModelsRequest { name_prefix: prefix })
                .await?
                .into_inner();
            print(json, &listed.models);
        }
        ModelsCommand::Versions { name } => {
            let listed = models
                .list_model_versions(ListModelVersionsRequest { name })
                .await?
                .into_inner();
            print(json, &listed.versions);
        }
    }
    Ok(())
}

fn print(json: bool, models: &[framefleet_proto::v1::ModelVersion]) {
    if json {
        outln!("{}", render::models_json(models));
    } else {
        out!("{}", render::models_table(models));
    }
}
