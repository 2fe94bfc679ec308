//! Who may call what: the four roles, the access class of every RPC of the API, and the
//! ownership rules for an ingestor's credential (its own channels and reports only).

use serde::Deserialize;

/// What a credential may do. Every role may read (get, list, status, watch); beyond that:
///
/// | role | may also |
/// |---|---|
/// | `admin` | everything: channels, schemas, pipelines, any report |
/// | `ingestor` | register, update and deregister its own channels; report as itself |
/// | `worker` | report as a worker |
/// | `observer` | nothing (status, watch, audit) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Ingestor,
    Worker,
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Ingestor => "ingestor",
            Self::Worker => "worker",
            Self::Observer => "observer",
        }
    }

    /// Whether this role may make calls of `access` at all (an ingestor's calls are then also
    /// checked against the channel or report they name: [`Principal::is_other_ingestor`]).
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => true,
            Access::ChannelWrite | Access::IngestorReport => matches!(self, Self::Admin | Self::Ingestor),
            Access::WorkerReport => matches!(self, Self::Admin | Self::Worker),
            Access::Admin => self == Self::Admin,
        }
    }
}

/// The access class of an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Register, update or deregister one channel.
    ChannelWrite,
    IngestorReport,
    WorkerReport,
    /// Schemas, pipelines, moving a channel between topic strategies.
    Admin,
}

impl Access {
    /// Which roles may make calls of this class, for refusals.
    pub fn who(self) -> &'static str {
        match self {
            Self::Read => "any role",
            Self::ChannelWrite => "the admin role, or the ingestor role for the ingestor's own channels",
            Self::IngestorReport => "the admin role, or the ingestor role reporting as itself",
            Self::WorkerReport => "the admin or worker role",
            Self::Admin => "the admin role",
        }
    }
}

/// Every RPC of framefleet's API with its access class. A unit test checks the list against the
/// API's descriptors, so a new RPC cannot be forgotten. gRPC health and reflection are not
/// here: they stay open to probes and grpcurl.
pub const RPCS: &[(&str, Access)] = &[
    ("/framefleet.v1.ChannelService/RegisterChannel", Access::ChannelWrite),
    ("/framefleet.v1.ChannelService/UpdateChannel", Access::ChannelWrite),
    ("/framefleet.v1.ChannelService/DeregisterChannel", Access::ChannelWrite),
    ("/framefleet.v1.ChannelService/MoveChannel", Access::Admin),
    ("/framefleet.v1.ChannelService/GetChannel", Access::Read),
    ("/framefleet.v1.ChannelService/ListChannels", Access::Read),
    ("/framefleet.v1.SchemaService/AddSchemaVersion", Access::Admin),
    ("/framefleet.v1.SchemaService/GetSchema", Access::Read),
    ("/framefleet.v1.SchemaService/ListSchemaVersions", Access::Read),
    ("/framefleet.v1.PipelineService/CreatePipelineVersion", Access::Admin),
    ("/framefleet.v1.PipelineService/GetPipeline", Access::Read),
    ("/framefleet.v1.PipelineService/ListPipelines", Access::Read),
    ("/framefleet.v1.PipelineService/ListPipelineVersions", Access::Read),
    ("/framefleet.v1.ModelService/PushModel", Access::Admin),
    ("/framefleet.v1.ModelService/GetModel", Access::Read),
    ("/framefleet.v1.ModelService/ListModels", Access::Read),
    ("/framefleet.v1.ModelService/ListModelVersions", Access::Read),
    ("/framefleet.v1.AssignmentService/WatchAssignments", Access::Read),
    ("/framefleet.v1.FleetService/ReportIngestor", Access::IngestorReport),
    (
        "/framefleet.v1.FleetService/StreamIngestorReports",
        Access::IngestorReport,
    ),
    ("/framefleet.v1.FleetService/ReportWorker", Access::WorkerReport),
    ("/framefleet.v1.FleetService/StreamWorkerReports", Access::WorkerReport),
    ("/framefleet.v1.FleetService/GetFleetStatus", Access::Read),
];

/// The access class of the RPC at `path`; `None` for what is not framefleet's (health,
/// reflection) or not an RPC at all.
pub fn access(path: &str) -> Option<Access> {
    RPCS.iter().find(|(rpc, _)| *rpc == path).map(|(_, access)| *access)
}

/// The caller a request was authenticated as, in the request's extensions for the services
/// to check what the call names (an ingestor's channels and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The credential's name, for messages and logs.
    pub name: String,
    pub role: Role,
    /// For the `ingestor` role: the ingestor id it acts as.
    pub ingestor_id: String,
}

impl Principal {
    /// The `PERMISSION_DENIED` status for `call`, naming the role, the credential and why.
    pub fn denied(&self, call: &str, why: &str) -> tonic::Status {
        tonic::Status::permission_denied(format!(
            "role {} (credential `{}`) may not call {call}: {why}",
            self.role.as_str(),
            self.name
        ))
    }

    /// Whether this is an ingestor's credential acting for another ingestor than
    /// `ingestor_id` (a report's id, the ingestor a registration claims the channel for, the
    /// ingestor that owns a channel): such calls are refused. Other roles act for anyone.
    pub fn is_other_ingestor(&self, ingestor_id: &str) -> bool {
        self.role == Role::Ingestor && self.ingestor_id != ingestor_id
    }

    /// The refusal of an ingestor's call on `what` (a channel, a report), which belongs to
    /// `ingestor_id`.
    pub fn not_its_own(&self, call: &str, what: &str, ingestor_id: &str) -> tonic::Status {
        let whose = if ingestor_id.is_empty() {
            "no ingestor".to_owned()
        } else {
            format!("ingestor `{ingestor_id}`")
        };
        self.denied(
            call,
            &format!(
                "{what} is {whose}'s, and this credential acts for ingestor `{}`",
                self.ingestor_id
            ),
        )
    }
}

/// Refuses `call` when `principal` is an ingestor's credential and the report is another
/// ingestor's (`ingestor_id`); passes otherwise, and when authentication is off.
pub fn own_report(principal: Option<&Principal>, call: &str, ingestor_id: &str) -> Result<(), tonic::Status> {
    match principal {
        Some(principal) if principal.is_other_ingestor(ingestor_id) => {
            Err(principal.not_its_own(call, &format!("the report of `{ingestor_id}`"), ingestor_id))
        }
        _ => Ok(()),
    }
}

/// The principal a request carries; `None` when authentication is off.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_rpc_of_the_api_has_an_access_class() {
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
            assert!(access(rpc).is_some(), "{rpc} has no access class in RPCS");
        }
        assert_eq!(rpcs.len(), RPCS.len(), "RPCS lists an RPC the API does not have");
    }

    #[test]
    fn roles_allow_what_their_table_says() {
        use Access::*;
        let table = [
            (Role::Admin, [true, true, true, true, true]),
            (Role::Ingestor, [true, true, true, false, false]),
            (Role::Worker, [true, false, false, true, false]),
            (Role::Observer, [true, false, false, false, false]),
        ];
        for (role, allowed) in table {
            for (access, expected) in [Read, ChannelWrite, IngestorReport, WorkerReport, Admin]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(role.allows(access), expected, "{role:?} {access:?}");
            }
        }
    }

    #[test]
    fn an_ingestor_acts_only_for_itself() {
        let ingestor = Principal {
            name: "camera-host-1".into(),
            role: Role::Ingestor,
            ingestor_id: "ingestor-1".into(),
        };
        assert!(!ingestor.is_other_ingestor("ingestor-1"));
        assert!(ingestor.is_other_ingestor("ingestor-2"));
        assert!(ingestor.is_other_ingestor(""));
        let status = ingestor.not_its_own("ChannelService/UpdateChannel", "channel `a`", "ingestor-2");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "role ingestor (credential `camera-host-1`) may not call ChannelService/UpdateChannel: channel `a` is ingestor `ingestor-2`'s, and this credential acts for ingestor `ingestor-1`"
        );
        let admin = Principal {
            role: Role::Admin,
            ..ingestor
        };
        assert!(!admin.is_other_ingestor("ingestor-2"));
    }
}
