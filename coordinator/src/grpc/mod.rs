//! The coordinator's gRPC layer, over the domain (channels, fleet reports and membership,
//! ledgers, assignments, leader, reconciler) and its adapters (`store`, `kafka`): the services
//! that translate requests into domain calls ([`service`], [`pipelines`], [`models`]), bearer-token checks ([`auth`]), the
//! health status that follows etcd ([`health`]), and the server's assembly — services,
//! reflection, TLS, request limits ([`server`]).

pub mod auth;
pub mod health;
pub mod models;
pub mod pipelines;
pub mod server;
pub mod service;
