//! Bearer-token authentication of mutating RPCs. Reads (get, list, status, watch), health
//! and reflection stay open so operators and probes can look without a secret. The token is
//! compared in constant time and never logged.

use std::task::{Context, Poll};
use tonic::Status;

/// Every RPC that writes to etcd or to fleet state. A unit test checks that every RPC of the
/// API is either here or in [`READ_ONLY_RPCS`], so a new RPC cannot be forgotten.
pub const MUTATING_RPCS: &[&str] = &[
    "/framefleet.v1.ChannelService/RegisterChannel",
    "/framefleet.v1.ChannelService/UpdateChannel",
    "/framefleet.v1.ChannelService/DeregisterChannel",
    "/framefleet.v1.ChannelService/MoveChannel",
    "/framefleet.v1.SchemaService/AddSchemaVersion",
    "/framefleet.v1.PipelineService/CreatePipelineVersion",
    "/framefleet.v1.FleetService/ReportIngestor",
    "/framefleet.v1.FleetService/ReportWorker",
    "/framefleet.v1.FleetService/StreamWorkerReports",
    "/framefleet.v1.FleetService/StreamIngestorReports",
];

pub const READ_ONLY_RPCS: &[&str] = &[
    "/framefleet.v1.ChannelService/GetChannel",
    "/framefleet.v1.ChannelService/ListChannels",
    "/framefleet.v1.SchemaService/GetSchema",
    "/framefleet.v1.SchemaService/ListSchemaVersions",
    "/framefleet.v1.PipelineService/GetPipeline",
    "/framefleet.v1.PipelineService/ListPipelines",
    "/framefleet.v1.PipelineService/ListPipelineVersions",
    "/framefleet.v1.AssignmentService/WatchAssignments",
    "/framefleet.v1.FleetService/GetFleetStatus",
];

/// The coordinator's token; `Debug` prints `***`.
pub use framefleet_proto::client::Token as Secret;

/// Tower layer that refuses mutating calls without `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerAuthLayer {
    token: Option<Secret>,
}

impl BearerAuthLayer {
    /// `None` turns authentication off.
    pub fn new(token: Option<Secret>) -> Self {
        Self { token }
    }
}

impl<S> tower_layer::Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    token: Option<Secret>,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for BearerAuth<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, futures::future::Ready<Result<http::Response<ResponseBody>, S::Error>>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        if let Some(token) = &self.token
            && MUTATING_RPCS.contains(&request.uri().path())
            && let Err(status) = check(request.headers(), token)
        {
            tracing::warn!(rpc = %request.uri().path(), reason = %status.message(), "call refused");
            return futures::future::Either::Right(futures::future::ready(Ok(status.into_http())));
        }
        futures::future::Either::Left(self.inner.call(request))
    }
}

fn check(headers: &http::HeaderMap, token: &Secret) -> Result<(), Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Status::unauthenticated(
            "this call changes state and needs `authorization: Bearer <token>`",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
    if constant_time_eq(presented.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated("the bearer token is not valid"))
    }
}

/// Takes as long for a wrong first byte as for a wrong last one, so timing reveals nothing
/// about the token but its length.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_rpc_is_classified() {
        let descriptors =
            prost_types::FileDescriptorSet::decode(framefleet_proto::FILE_DESCRIPTOR_SET).expect("decode");
        let mut rpcs = Vec::new();
        for file in descriptors.file {
            for service in &file.service {
                for method in &service.method {
                    rpcs.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        assert!(!rpcs.is_empty());
        for rpc in &rpcs {
            assert!(
                MUTATING_RPCS.contains(&rpc.as_str()) != READ_ONLY_RPCS.contains(&rpc.as_str()),
                "{rpc} must be in exactly one of MUTATING_RPCS and READ_ONLY_RPCS"
            );
        }
        assert_eq!(rpcs.len(), MUTATING_RPCS.len() + READ_ONLY_RPCS.len());
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        let token = Secret::new("s3cret");
        assert_eq!(format!("{token:?}"), "***");
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            check(&headers, &token).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
        headers.insert(http::header::AUTHORIZATION, "Bearer wrong!".parse().expect("header"));
        assert!(check(&headers, &token).is_err());
        headers.insert(http::header::AUTHORIZATION, "Bearer s3cret".parse().expect("header"));
        assert!(check(&headers, &token).is_ok());
    }
}
