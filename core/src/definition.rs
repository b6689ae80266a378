//! A definition's own stream: which version labels of `(namespace, name)` exist, which one is
//! the head (what `latest` and new runs without a version get) and which are deprecated.
//!
//! The content of each version stays content-addressed (the store keeps the source by hash, and
//! runs pin to the hash); the stream records what happened to the labels, as events with a
//! stable type name ([`crate::names::definition_event`]) and a schema version
//! ([`DEFINITION_EVENT_VERSION`]), like a run's. [`DefinitionState`] is their fold, and its
//! command methods ([`DefinitionState::publish`], [`DefinitionState::roll_back`],
//! [`DefinitionState::deprecate`]) decide which events a command produces, or refuse it; the
//! caller appends them at the sequence it folded, so two racing writers cannot both win.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{EventDecodeError, Millis};
use crate::names::definition_event as names;

/// Current schema version of every definition event type. `1`: the first release.
pub const DEFINITION_EVENT_VERSION: &str = "1";

/// The label a reference uses for the head.
pub const LATEST: &str = "latest";

/// Why the head moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HeadMoveReason {
    /// A new version was published (deployed) and went live.
    Deploy,
    /// An operator moved the head back (or forward) to a published version.
    Rollback,
}

impl HeadMoveReason {
    /// The word shown and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            HeadMoveReason::Deploy => "deploy",
            HeadMoveReason::Rollback => "rollback",
        }
    }
}

/// An event of a definition's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum DefinitionEvent {
    /// A version label was bound to content, for good.
    VersionPublished {
        /// `document.version`.
        label: String,
        /// The content hash the label names from now on.
        hash: String,
        /// Who published it: an API token's name, `cli`, or `migration` for versions deployed
        /// before definitions had streams.
        by: String,
        /// When (ms since the epoch).
        at: Millis,
        /// The publisher's note, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The head moved: new runs that name no version start on `to`.
    HeadMoved {
        /// The head before (absent for the first version).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// The head now.
        to: String,
        /// A deploy or a rollback.
        reason: HeadMoveReason,
        /// Who moved it.
        by: String,
        /// When (ms since the epoch).
        at: Millis,
    },
    /// A version may no longer start runs (its runs in flight go on).
    VersionDeprecated {
        /// The version.
        label: String,
        /// Who deprecated it.
        by: String,
        /// When (ms since the epoch).
        at: Millis,
        /// Why, if said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl DefinitionEvent {
    /// Stable type name, stored beside the payload.
    pub fn event_type(&self) -> &'static str {
        match self {
            DefinitionEvent::VersionPublished { .. } => names::VERSION_PUBLISHED,
            DefinitionEvent::HeadMoved { .. } => names::HEAD_MOVED,
            DefinitionEvent::VersionDeprecated { .. } => names::VERSION_DEPRECATED,
        }
    }

    /// The payload alone (without the type tag), as stored in the `payload` column.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut o)) => o.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// When it happened.
    pub fn at(&self) -> Millis {
        match self {
            DefinitionEvent::VersionPublished { at, .. }
            | DefinitionEvent::HeadMoved { at, .. }
            | DefinitionEvent::VersionDeprecated { at, .. } => *at,
        }
    }

    /// Rebuilds an event from its stored type, version and payload.
    pub fn from_stored(
        event_type: &str,
        version: &str,
        payload: Value,
    ) -> Result<DefinitionEvent, EventDecodeError> {
        if version != DEFINITION_EVENT_VERSION {
            return Err(EventDecodeError::UnknownVersion {
                event_type: event_type.to_string(),
                version: version.to_string(),
            });
        }
        let mut o = serde_json::Map::new();
        o.insert("type".into(), Value::String(event_type.to_string()));
        o.insert("data".into(), payload);
        serde_json::from_value(Value::Object(o)).map_err(|e| EventDecodeError::Payload {
            event_type: event_type.to_string(),
            version: version.to_string(),
            message: e.to_string(),
        })
    }
}

/// The stream id of definition `namespace/name`. Namespaces and names are DNS labels in the
/// DSL (no `/`), so the id is unambiguous.
pub fn stream_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// A published version as the fold knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedVersion {
    /// The label (`document.version`).
    pub label: String,
    /// Its content hash.
    pub hash: String,
    /// Who published it.
    pub by: String,
    /// When (ms since the epoch).
    pub at: Millis,
    /// The publisher's note.
    pub note: Option<String>,
    /// Set once the version is deprecated.
    pub deprecated: Option<Deprecation>,
}

/// How a version was deprecated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deprecation {
    /// Who.
    pub by: String,
    /// When (ms since the epoch).
    pub at: Millis,
    /// Why, if said.
    pub reason: Option<String>,
}

/// Who and when, for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// An API token's name, or `cli`.
    pub by: String,
    /// The time of the command (the caller reads the clock; core never does).
    pub at: Millis,
}

/// A definition's state: the fold of its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefinitionState {
    /// Published versions, in the order they were published.
    pub versions: Vec<PublishedVersion>,
    /// The head's label, once a version was published.
    pub head: Option<String>,
    /// The sequence of the last event folded (0: no stream yet): what an append of a command's
    /// events expects.
    pub sequence: u64,
}

/// Why a command on a definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionCommandError {
    /// The label is published with other content: labels are immutable.
    #[error(
        "version {label} is already published with content {existing}; this content is \
         {new}: a version label is immutable, publish it under a new version"
    )]
    LabelTaken {
        /// The label.
        label: String,
        /// The hash it holds.
        existing: String,
        /// The hash offered.
        new: String,
    },
    /// No version has this label.
    #[error("version {label} is not published")]
    UnknownVersion {
        /// The label.
        label: String,
    },
    /// The version is deprecated (no new runs, and the head may not move to it).
    #[error("version {label} is deprecated")]
    Deprecated {
        /// The label.
        label: String,
    },
    /// The head may not be deprecated: new runs that name no version would have nothing to run.
    #[error(
        "version {label} is the head: roll back to (or deploy) another version before \
         deprecating it"
    )]
    HeadDeprecation {
        /// The label.
        label: String,
    },
    /// The stream has no version yet.
    #[error("no version is published")]
    NothingPublished,
}

impl DefinitionState {
    /// The fold of `events`, numbered from 1.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a DefinitionEvent>) -> Self {
        let mut s = DefinitionState::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    /// Folds one event. Total: never fails. A label published again with other content (which
    /// only the migration of stores from before label immutability can record) names the newer
    /// content, as `latest` and version lookups did then.
    pub fn apply(&mut self, event: &DefinitionEvent) {
        self.sequence += 1;
        match event {
            DefinitionEvent::VersionPublished {
                label,
                hash,
                by,
                at,
                note,
            } => {
                let v = PublishedVersion {
                    label: label.clone(),
                    hash: hash.clone(),
                    by: by.clone(),
                    at: *at,
                    note: note.clone(),
                    deprecated: None,
                };
                match self.versions.iter_mut().find(|x| x.label == *label) {
                    Some(x) => *x = v,
                    None => self.versions.push(v),
                }
            }
            DefinitionEvent::HeadMoved { to, .. } => self.head = Some(to.clone()),
            DefinitionEvent::VersionDeprecated {
                label,
                by,
                at,
                reason,
            } => {
                if let Some(v) = self.versions.iter_mut().find(|x| x.label == *label) {
                    v.deprecated = Some(Deprecation {
                        by: by.clone(),
                        at: *at,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }

    /// The version labelled `label`.
    pub fn version(&self, label: &str) -> Option<&PublishedVersion> {
        self.versions.iter().find(|v| v.label == label)
    }

    /// The head version.
    pub fn head_version(&self) -> Option<&PublishedVersion> {
        self.head.as_deref().and_then(|h| self.version(h))
    }

    /// The version a new run of `version` starts on: the head for [`LATEST`]. A deprecated
    /// version is refused.
    pub fn resolve_for_start(
        &self,
        version: &str,
    ) -> Result<&PublishedVersion, DefinitionCommandError> {
        let v = if version == LATEST {
            self.head_version()
                .ok_or(DefinitionCommandError::NothingPublished)?
        } else {
            self.version(version)
                .ok_or_else(|| DefinitionCommandError::UnknownVersion {
                    label: version.to_string(),
                })?
        };
        if v.deprecated.is_some() {
            return Err(DefinitionCommandError::Deprecated {
                label: v.label.clone(),
            });
        }
        Ok(v)
    }

    /// Publishes `label` with content `hash` and moves the head to it. Empty when the label
    /// already holds exactly this content (nothing changes, the head included); refused when it
    /// holds other content.
    pub fn publish(
        &self,
        label: &str,
        hash: &str,
        note: Option<String>,
        actor: &Actor,
    ) -> Result<Vec<DefinitionEvent>, DefinitionCommandError> {
        if let Some(v) = self.version(label) {
            if v.hash == hash {
                return Ok(Vec::new());
            }
            return Err(DefinitionCommandError::LabelTaken {
                label: label.to_string(),
                existing: v.hash.clone(),
                new: hash.to_string(),
            });
        }
        Ok(vec![
            DefinitionEvent::VersionPublished {
                label: label.to_string(),
                hash: hash.to_string(),
                by: actor.by.clone(),
                at: actor.at,
                note,
            },
            DefinitionEvent::HeadMoved {
                from: self.head.clone(),
                to: label.to_string(),
                reason: HeadMoveReason::Deploy,
                by: actor.by.clone(),
                at: actor.at,
            },
        ])
    }

    /// Moves the head to the published, not deprecated version `to`. Empty when it is the
    /// head already.
    pub fn roll_back(
        &self,
        to: &str,
        actor: &Actor,
    ) -> Result<Vec<DefinitionEvent>, DefinitionCommandError> {
        if self.versions.is_empty() {
            return Err(DefinitionCommandError::NothingPublished);
        }
        let v = self
            .version(to)
            .ok_or_else(|| DefinitionCommandError::UnknownVersion {
                label: to.to_string(),
            })?;
        if v.deprecated.is_some() {
            return Err(DefinitionCommandError::Deprecated {
                label: to.to_string(),
            });
        }
        if self.head.as_deref() == Some(to) {
            return Ok(Vec::new());
        }
        Ok(vec![DefinitionEvent::HeadMoved {
            from: self.head.clone(),
            to: to.to_string(),
            reason: HeadMoveReason::Rollback,
            by: actor.by.clone(),
            at: actor.at,
        }])
    }

    /// Deprecates `label`: new runs of it are refused from now on. Refused for the head; empty
    /// when it is deprecated already.
    pub fn deprecate(
        &self,
        label: &str,
        reason: Option<String>,
        actor: &Actor,
    ) -> Result<Vec<DefinitionEvent>, DefinitionCommandError> {
        let v = self
            .version(label)
            .ok_or_else(|| DefinitionCommandError::UnknownVersion {
                label: label.to_string(),
            })?;
        if v.deprecated.is_some() {
            return Ok(Vec::new());
        }
        if self.head.as_deref() == Some(label) {
            return Err(DefinitionCommandError::HeadDeprecation {
                label: label.to_string(),
            });
        }
        Ok(vec![DefinitionEvent::VersionDeprecated {
            label: label.to_string(),
            by: actor.by.clone(),
            at: actor.at,
            reason,
        }])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on failure

    use super::*;

    fn cli(at: Millis) -> Actor {
        Actor {
            by: "cli".into(),
            at,
        }
    }

    /// Given `events`, when `command`, then the events it produces (folded on).
    fn given(events: &[DefinitionEvent]) -> DefinitionState {
        DefinitionState::from_events(events)
    }

    #[test]
    fn publishing_moves_the_head_and_republishing_is_a_no_op() {
        let s = given(&[]);
        let e = s.publish("1.0.0", "aa", None, &cli(1)).unwrap();
        assert_eq!(e.len(), 2);
        let s = given(&e);
        assert_eq!(s.head.as_deref(), Some("1.0.0"));
        assert_eq!(s.sequence, 2);
        assert!(s.publish("1.0.0", "aa", None, &cli(2)).unwrap().is_empty());
        let e2 = s
            .publish("0.9.0", "bb", Some("hotfix".into()), &cli(3))
            .unwrap();
        assert_eq!(
            e2[1],
            DefinitionEvent::HeadMoved {
                from: Some("1.0.0".into()),
                to: "0.9.0".into(),
                reason: HeadMoveReason::Deploy,
                by: "cli".into(),
                at: 3
            }
        );
    }

    #[test]
    fn a_label_is_immutable() {
        let s = given(&given(&[]).publish("1.0.0", "aa", None, &cli(1)).unwrap());
        let err = s.publish("1.0.0", "bb", None, &cli(2)).unwrap_err();
        assert_eq!(
            err,
            DefinitionCommandError::LabelTaken {
                label: "1.0.0".into(),
                existing: "aa".into(),
                new: "bb".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("1.0.0") && msg.contains("aa") && msg.contains("bb"));
    }

    #[test]
    fn rollback_and_deprecation() {
        let mut events = given(&[]).publish("1.0.0", "aa", None, &cli(1)).unwrap();
        events.extend(
            given(&events)
                .publish("2.0.0", "bb", None, &cli(2))
                .unwrap(),
        );
        let s = given(&events);
        assert_eq!(s.resolve_for_start(LATEST).unwrap().hash, "bb");
        // The head may not be deprecated.
        assert!(matches!(
            s.deprecate("2.0.0", None, &cli(3)),
            Err(DefinitionCommandError::HeadDeprecation { .. })
        ));
        let back = s.roll_back("1.0.0", &cli(3)).unwrap();
        assert!(matches!(
            &back[0],
            DefinitionEvent::HeadMoved { from: Some(f), to, reason: HeadMoveReason::Rollback, .. }
                if f == "2.0.0" && to == "1.0.0"
        ));
        events.extend(back);
        let s = given(&events);
        assert_eq!(s.resolve_for_start(LATEST).unwrap().hash, "aa");
        assert!(s.roll_back("1.0.0", &cli(4)).unwrap().is_empty());
        assert!(matches!(
            s.roll_back("3.0.0", &cli(4)),
            Err(DefinitionCommandError::UnknownVersion { .. })
        ));
        let dep = s.deprecate("2.0.0", Some("bad".into()), &cli(4)).unwrap();
        events.extend(dep);
        let s = given(&events);
        assert!(matches!(
            s.resolve_for_start("2.0.0"),
            Err(DefinitionCommandError::Deprecated { .. })
        ));
        assert!(s.deprecate("2.0.0", None, &cli(5)).unwrap().is_empty());
        assert!(matches!(
            s.roll_back("2.0.0", &cli(5)),
            Err(DefinitionCommandError::Deprecated { .. })
        ));
        assert_eq!(s.resolve_for_start("1.0.0").unwrap().hash, "aa");
    }

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let e = DefinitionEvent::HeadMoved {
            from: None,
            to: "1.0.0".into(),
            reason: HeadMoveReason::Deploy,
            by: "cli".into(),
            at: 7,
        };
        let back =
            DefinitionEvent::from_stored(e.event_type(), DEFINITION_EVENT_VERSION, e.payload())
                .unwrap();
        assert_eq!(back, e);
        assert_eq!(e.payload()["reason"], "deploy");
        assert!(DefinitionEvent::from_stored("HeadMoved", "9", e.payload()).is_err());
    }
}
