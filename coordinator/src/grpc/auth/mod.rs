//! Authentication and authorization of framefleet's RPCs. Once any credential is configured
//! (the shared token, a credentials file), every framefleet RPC needs one: a bearer token
//! (`authorization: Bearer <token>`) or, with `--tls-client-ca`, a client certificate named in
//! the credentials file. Each credential has a role ([`policy::Role`]); a call outside it is
//! refused `PERMISSION_DENIED` naming the role, the credential and the call. gRPC health and
//! reflection stay open to probes and grpcurl. Tokens are compared by their SHA-256 and never
//! logged.

pub mod credentials;
pub mod policy;

use credentials::Keyring;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;

/// The shared token; `Debug` prints `***`.
pub use framefleet_proto::client::Token as Secret;

/// Tower layer that authenticates each framefleet RPC, refuses what the caller's role may not
/// call, and puts the caller's [`policy::Principal`] in the request's extensions for the
/// services' own checks (an ingestor's channels and reports).
#[derive(Clone)]
pub struct AuthLayer {
    keyring: Option<Arc<Keyring>>,
}

impl AuthLayer {
    /// `None` turns authentication off.
    pub fn new(keyring: Option<Arc<Keyring>>) -> Self {
        Self { keyring }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            keyring: self.keyring.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    keyring: Option<Arc<Keyring>>,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for Auth<S>
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

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        if let Some(keyring) = &self.keyring
            && let Some(access) = policy::access(request.uri().path())
        {
            match authorize(keyring, &request, access) {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(status) => {
                    tracing::warn!(rpc = %request.uri().path(), reason = %status.message(), "call refused");
                    return futures::future::Either::Right(futures::future::ready(Ok(status.into_http())));
                }
            }
        }
        futures::future::Either::Left(self.inner.call(request))
    }
}

/// The caller of `request`, if its credential is known and its role may make calls of `access`.
fn authorize<B>(
    keyring: &Keyring,
    request: &http::Request<B>,
    access: policy::Access,
) -> Result<policy::Principal, Status> {
    let principal = authenticate(keyring, request)?;
    if !principal.role.allows(access) {
        let rpc = request.uri().path().trim_start_matches("/framefleet.v1.");
        return Err(principal.denied(rpc, &format!("it needs {}", access.who())));
    }
    Ok(principal)
}

fn authenticate<B>(keyring: &Keyring, request: &http::Request<B>) -> Result<policy::Principal, Status> {
    if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
        let presented = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
        return keyring
            .by_token(presented)
            .ok_or_else(|| Status::unauthenticated("the bearer token is not valid"));
    }
    if let Some(certificate) = peer_certificate(request) {
        let (principal, fingerprint) = keyring.by_certificate(&certificate);
        return principal.ok_or_else(|| {
            Status::unauthenticated(format!(
                "the client certificate (SHA-256 {fingerprint}) is not in the coordinator's credentials file"
            ))
        });
    }
    Err(Status::unauthenticated(
        "this call needs a credential: `authorization: Bearer <token>` or a client certificate",
    ))
}

/// The DER of the client's certificate, when the connection is TLS and the client sent one
/// (verified against `--tls-client-ca` by the TLS handshake).
fn peer_certificate<B>(request: &http::Request<B>) -> Option<Vec<u8>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certificates.first().map(|certificate| certificate.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::policy::Role;
    use super::*;

    fn request(rpc: &str, token: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(format!("http://coordinator{rpc}"));
        if let Some(token) = token {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn the_shared_token_is_an_admin_and_nothing_else_passes() {
        let keyring = Keyring::load(Some(Secret::new("s3cret")), None)
            .expect("load")
            .expect("on");
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "***");
        let rpc = "/framefleet.v1.ChannelService/ListChannels";
        let access = policy::access(rpc).expect("framefleet's");
        let principal = authorize(&keyring, &request(rpc, Some("s3cret")), access).expect("admin");
        assert_eq!(principal.role, Role::Admin);
        for (token, message) in [
            (None, "this call needs a credential"),
            (Some("wrong!"), "the bearer token is not valid"),
        ] {
            let status = authorize(&keyring, &request(rpc, token), access).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().starts_with(message), "{}", status.message());
            assert!(!status.message().contains("s3cret"));
        }
        assert!(
            policy::access("/grpc.health.v1.Health/Check").is_none(),
            "health stays open"
        );
    }
}
