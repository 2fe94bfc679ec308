//! `framefleet schemas …` (SchemaService).

use crate::args::SchemasCommand;
use crate::failure::Failure;
use crate::output::print_schemas;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use framefleet_proto::v1::{AddSchemaVersionRequest, GetSchemaRequest, ListSchemaVersionsRequest};

pub(super) async fn run(
    command: SchemasCommand,
    schemas: &mut SchemaServiceClient<CoordinatorChannel>,
    json: bool,
) -> Result<(), Failure> {
    match command {
        SchemasCommand::Add {
            channel_id,
            schema,
            allow_frame_size_change,
            expected_revision,
        } => {
            let request = AddSchemaVersionRequest {
                channel_id,
                schema: Some(schema.to_proto()),
                allow_frame_size_change,
                expected_revision,
            };
            let added = schemas.add_schema_version(request).await?.into_inner();
            print_schemas(json, &[added]);
        }
        SchemasCommand::Get { channel_id, version } => {
            let schema = schemas
                .get_schema(GetSchemaRequest { channel_id, version })
                .await?
                .into_inner();
            print_schemas(json, &[schema]);
        }
        SchemasCommand::List { channel_id } => {
            let listed = schemas
                .list_schema_versions(ListSchemaVersionsRequest { channel_id })
                .await?
                .into_inner();
            print_schemas(json, &listed.schemas);
        }
    }
    Ok(())
}
