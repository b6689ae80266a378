//! The migration of stores from before definition streams: the rows those builds deployed
//! become published events, once, at a writing open of the store.
//!
//! A step in Rust rather than a `.sql` file because the head it records is the highest
//! *semantic* version (what `latest` meant then), which SQL cannot order by, and because the
//! events must be written in the wire format of `cairn_core::definition`. It is idempotent and
//! safe to run from several processes at once: it only writes streams that do not exist yet,
//! each with `expected_sequence = 0`, so a second writer's append conflicts and is skipped.

use std::collections::BTreeMap;

use cairn_core::definition::{
    stream_id, DefinitionEvent, HeadMoveReason, DEFINITION_EVENT_VERSION,
};
use serde_json::json;

use super::util::pick_latest;
use super::{
    AppendRequest, DefinitionStore, EventLog, Lease, NewEvent, Result, StoreError,
    StoredDefinition, DEFINITION_AGGREGATE,
};

/// Who the migrated events say published the versions.
pub const MIGRATION_ACTOR: &str = "migration";

/// Publishes every deployed row whose `namespace/name` has no stream yet: one
/// `VersionPublished` per row in the order the rows were recorded (a label that old builds let
/// be deployed twice with other content is published twice, and the fold keeps the newer
/// content, as `latest` and version lookups did), then a `HeadMoved` to the highest version.
pub(crate) async fn publish_deployed_rows<S>(store: &S) -> Result<()>
where
    S: EventLog + DefinitionStore + ?Sized,
{
    let rows = store.unpublished_definitions().await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut streams: BTreeMap<String, Vec<StoredDefinition>> = BTreeMap::new();
    for r in rows {
        streams
            .entry(stream_id(&r.namespace, &r.name))
            .or_default()
            .push(r);
    }
    let at = crate::clock::now_ms();
    for (stream, rows) in streams {
        let mut events: Vec<DefinitionEvent> = rows
            .iter()
            .map(|r| DefinitionEvent::VersionPublished {
                label: r.version.clone(),
                hash: r.hash.clone(),
                by: MIGRATION_ACTOR.into(),
                at,
                note: Some("deployed before definitions had streams".into()),
            })
            .collect();
        if let Some(head) = pick_latest(rows) {
            events.push(DefinitionEvent::HeadMoved {
                from: None,
                to: head.version,
                reason: HeadMoveReason::Deploy,
                by: MIGRATION_ACTOR.into(),
                at,
            });
        }
        let request = AppendRequest {
            aggregate_type: DEFINITION_AGGREGATE.into(),
            stream: stream.clone(),
            expected_sequence: 0,
            events: events.iter().map(new_event).collect(),
            run_summary: None,
            lease: Lease::External,
        };
        match store.append(vec![request]).await {
            // Another process migrated (or deployed) it first.
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A definition event as the store writes it.
pub fn new_event(e: &DefinitionEvent) -> NewEvent {
    NewEvent {
        event_type: e.event_type().to_string(),
        event_version: DEFINITION_EVENT_VERSION.to_string(),
        payload: e.payload(),
        metadata: json!({}),
    }
}
