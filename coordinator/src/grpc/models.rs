//! The ModelService adapter: gathers a push's stream into one model and delegates to
//! [`ModelRegistry`]; errors mapped in one place (`From<CoordinatorError> for Status`).

use crate::error::CoordinatorError;
use crate::models::{ModelBytes, ModelRegistry, PushedModel};
use crate::store::MetadataStore;
use framefleet_proto::v1::model_service_server::ModelService;
use framefleet_proto::v1::push_model_request::Part;
use framefleet_proto::v1::{
    GetModelRequest, ListModelVersionsRequest, ListModelVersionsResponse, ListModelsRequest, ListModelsResponse,
    ModelVersion, PushModelHeader, PushModelRequest, PushModelResponse,
};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct ModelApi<S, B> {
    pub models: Arc<ModelRegistry<S, B>>,
    /// Pushes whose weights are larger are refused while they arrive (`--max-model-mib`).
    pub max_model_bytes: u64,
}

#[tonic::async_trait]
impl<S: MetadataStore, B: ModelBytes> ModelService for ModelApi<S, B> {
    #[tracing::instrument(skip_all)]
    async fn push_model(
        &self,
        request: Request<Streaming<PushModelRequest>>,
    ) -> Result<Response<PushModelResponse>, Status> {
        let mut stream = request.into_inner();
        let mut header: Option<PushModelHeader> = None;
        let mut weights = Vec::new();
        while let Some(message) = stream.message().await? {
            match (message.part, header.is_some()) {
                (Some(Part::Header(first)), false) => header = Some(first),
                (Some(Part::Header(_)), true) => {
                    return Err(
                        CoordinatorError::invalid("header", "a push has one header, in its first message").into(),
                    );
                }
                (Some(Part::Chunk(_)) | None, false) => {
                    return Err(
                        CoordinatorError::invalid("header", "the first message of a push is its header").into(),
                    );
                }
                (Some(Part::Chunk(chunk)), true) => {
                    if (weights.len() + chunk.len()) as u64 > self.max_model_bytes {
                        return Err(CoordinatorError::invalid(
                            "chunk",
                            format!(
                                "the weights are over this coordinator's limit of {} MiB (--max-model-mib)",
                                self.max_model_bytes >> 20
                            ),
                        )
                        .into());
                    }
                    weights.extend_from_slice(&chunk);
                }
                (None, true) => {}
            }
        }
        let header = header.ok_or_else(|| CoordinatorError::invalid("header", "the push sent no message"))?;
        let (model, created) = self
            .models
            .push(&PushedModel {
                name: &header.name,
                manifest_json: &header.manifest_json,
                description: &header.description,
                weights: &weights,
            })
            .await?;
        Ok(Response::new(PushModelResponse {
            model: Some(model),
            created,
        }))
    }

    async fn get_model(&self, request: Request<GetModelRequest>) -> Result<Response<ModelVersion>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.models.get(&request.name, request.version).await?))
    }

    async fn list_models(&self, request: Request<ListModelsRequest>) -> Result<Response<ListModelsResponse>, Status> {
        let models = self.models.list(&request.into_inner().name_prefix).await?;
        Ok(Response::new(ListModelsResponse { models }))
    }

    async fn list_model_versions(
        &self,
        request: Request<ListModelVersionsRequest>,
    ) -> Result<Response<ListModelVersionsResponse>, Status> {
        let versions = self.models.list_versions(&request.into_inner().name).await?;
        Ok(Response::new(ListModelVersionsResponse { versions }))
    }
}
