//! `framefleet pipelines …` (PipelineService).

use crate::args::PipelinesCommand;
use crate::failure::Failure;
use crate::output::{out, outln};
use crate::render;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;
use framefleet_proto::v1::{
    CreatePipelineVersionRequest, GetPipelineRequest, ListPipelineVersionsRequest, ListPipelinesRequest,
};

pub(super) async fn run(
    command: PipelinesCommand,
    pipelines: &mut PipelineServiceClient<CoordinatorChannel>,
    json: bool,
) -> Result<(), Failure> {
    match command {
        PipelinesCommand::Create {
            name,
            spec,
            description,
            expected_revision,
        } => {
            let request = CreatePipelineVersionRequest {
                name,
                spec: Some(spec.to_proto()),
                expected_revision,
                description,
            };
            let response = pipelines.create_pipeline_version(request).await?.into_inner();
            let pipeline = response.pipeline.unwrap_or_default();
            if json {
                outln!("{}", render::pipeline_created_json(&pipeline, response.created));
            } else {
                let version = pipeline.current.as_ref().map_or(0, |current| current.version);
                let what = if response.created { "created" } else { "unchanged" };
                outln!(
                    "pipeline {} version {version} {what} (revision {})",
                    pipeline.name,
                    pipeline.revision
                );
            }
        }
        PipelinesCommand::Get { name, version } => {
            let version = pipelines
                .get_pipeline(GetPipelineRequest { name, version })
                .await?
                .into_inner();
            print_versions(json, &[version]);
        }
        PipelinesCommand::List { prefix } => {
            let listed = pipelines
                .list_pipelines(ListPipelinesRequest { name_prefix: prefix })
                .await?
                .into_inner();
            if json {
                outln!("{}", render::pipelines_json(&listed.pipelines));
            } else {
                out!("{}", render::pipelines_table(&listed.pipelines));
            }
        }
        PipelinesCommand::Versions { name } => {
            let listed = pipelines
                .list_pipeline_versions(ListPipelineVersionsRequest { name })
                .await?
                .into_inner();
            print_versions(json, &listed.versions);
        }
    }
    Ok(())
}

fn print_versions(json: bool, versions: &[framefleet_proto::v1::PipelineVersion]) {
    if json {
        outln!("{}", render::pipeline_versions_json(versions));
    } else {
        out!("{}", render::pipeline_versions_table(versions));
    }
}
