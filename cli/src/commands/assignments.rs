//! `framefleet assignments` (AssignmentService.WatchAssignments).

use crate::failure::Failure;
use crate::output::outln;
use crate::render;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::WatchAssignmentsRequest;
use framefleet_proto::v1::assignment_service_client::AssignmentServiceClient;

/// Prints each assignment update as it arrives: one JSON object per line with `--json`.
pub(super) async fn follow(
    channel: CoordinatorChannel,
    json: bool,
    ingestor_id: String,
    after_revision: i64,
    count: Option<usize>,
) -> Result<(), Failure> {
    let mut client = AssignmentServiceClient::new(channel);
    let mut updates = client
        .watch_assignments(WatchAssignmentsRequest {
            ingestor_id,
            after_revision,
        })
        .await?
        .into_inner();
    let mut received = 0usize;
    while count.is_none_or(|count| received < count) {
        let update = tokio::select! {
            update = updates.message() => update?,
            _ = tokio::signal::ctrl_c() => return Err(Failure::Other(anyhow::anyhow!("interrupted"), 130)),
        };
        let Some(update) = update else {
            return Err(Failure::Other(anyhow::anyhow!("the coordinator ended the watch"), 6));
        };
        if json {
            outln!("{}", render::assignment_update_json(&update));
        } else {
            outln!("{}", render::assignment_update_line(&update));
        }
        received += 1;
    }
    Ok(())
}
