//! The PipelineService adapter: delegates to [`PipelineRegistry`], errors mapped in one place
//! (`From<CoordinatorError> for Status`).

use crate::pipelines::{NewVersion, PipelineRegistry};
use crate::store::MetadataStore;
use framefleet_proto::v1::pipeline_service_server::PipelineService;
use framefleet_proto::v1::{
    CreatePipelineVersionRequest, CreatePipelineVersionResponse, GetPipelineRequest, ListPipelineVersionsRequest,
    ListPipelineVersionsResponse, ListPipelinesRequest, ListPipelinesResponse, PipelineVersion,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct PipelineApi<S> {
    pub pipelines: Arc<PipelineRegistry<S>>,
}

#[tonic::async_trait]
impl<S: MetadataStore> PipelineService for PipelineApi<S> {
    #[tracing::instrument(skip_all, fields(pipeline = %request.get_ref().name))]
    async fn create_pipeline_version(
        &self,
        request: Request<CreatePipelineVersionRequest>,
    ) -> Result<Response<CreatePipelineVersionResponse>, Status> {
        let request = request.into_inner();
        let (pipeline, created) = self
            .pipelines
            .create_version(&NewVersion {
                name: &request.name,
                spec: request.spec.as_ref(),
                expected_revision: request.expected_revision,
                description: &request.description,
            })
            .await?;
        Ok(Response::new(CreatePipelineVersionResponse {
            pipeline: Some(pipeline),
            created,
        }))
    }

    async fn get_pipeline(&self, request: Request<GetPipelineRequest>) -> Result<Response<PipelineVersion>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.pipelines.get(&request.name, request.version).await?))
    }

    async fn list_pipelines(
        &self,
        request: Request<ListPipelinesRequest>,
    ) -> Result<Response<ListPipelinesResponse>, Status> {
        let pipelines = self.pipelines.list(&request.into_inner().name_prefix).await?;
        Ok(Response::new(ListPipelinesResponse { pipelines }))
    }

    async fn list_pipeline_versions(
        &self,
        request: Request<ListPipelineVersionsRequest>,
    ) -> Result<Response<ListPipelineVersionsResponse>, Status> {
        let versions = self.pipelines.list_versions(&request.into_inner().name).await?;
        Ok(Response::new(ListPipelineVersionsResponse { versions }))
    }
}
