//! Definitions: content-addressed, stored in the event store, and compiled once into a
//! [`Decider`] that every run pinned to that content shares; and the stream of each
//! `namespace/name` (`cairn_core::definition`), which says which version labels exist, which
//! one is the head (`latest`) and which are deprecated.
//!
//! Publishing, rolling back and deprecating fold the stream, let the pure command of
//! [`DefinitionState`] decide, and append its events at the sequence they folded: a writer that
//! lost a race reloads and decides again, so two racing deploys of one label cannot both win.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_core::decider::Decider;
use cairn_core::definition::{
    stream_id, Actor, DefinitionCommandError, DefinitionEvent, DefinitionState, LATEST,
};
use cairn_core::dsl::diff::{diff_json, DefinitionDiff};
use cairn_core::dsl::{Problem, Workflow};
use cairn_core::events::DefinitionRef;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::legacy::new_event;
use crate::store::{
    AppendRequest, EventStore, Lease, StoreError, StoredDefinition, StoredEvent,
    DEFINITION_AGGREGATE,
};
use crate::{Error, Result};

/// How many times a command is decided again after losing a race for the stream.
const MAX_RACES: usize = 16;

/// The content hash of a definition: SHA-256 of its canonical JSON (keys in document order as
/// parsed, no whitespace), in hex.
pub fn content_hash(def: &Workflow) -> Result<(String, Value)> {
    let serialize = |source| Error::Serialize {
        what: "a definition".into(),
        source,
    };
    let value = serde_json::to_value(def).map_err(serialize)?;
    let bytes = serde_json::to_vec(&value).map_err(serialize)?;
    let hash = Sha256::digest(&bytes);
    Ok((hash.iter().map(|b| format!("{b:02x}")).collect(), value))
}

/// The problems a stored definition has under this build's rules (empty when it is valid): what
/// front ends show for a definition recorded by an older build. A stored source that no longer
/// decodes as a workflow is one problem at the document (pointer `""`).
pub fn recheck(def: &StoredDefinition) -> Vec<Problem> {
    match serde_json::from_value::<Workflow>(def.source.clone()) {
        Ok(w) => match cairn_core::dsl::validate(&w) {
            Ok(()) => Vec::new(),
            Err(e) => e.problems,
        },
        Err(e) => vec![Problem {
            pointer: String::new(),
            line: None,
            column: None,
            message: format!("the stored definition cannot be decoded: {e}"),
        }],
    }
}

/// Who publishes, and why: what a deploy records besides the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// An API token's name, `cli`, or what an embedding application calls itself.
    pub by: String,
    /// A note kept with the version.
    pub note: Option<String>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            by: "runtime".into(),
            note: None,
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The definition.
    pub definition: DefinitionRef,
    /// False when the label already held exactly this content: nothing was recorded, the head
    /// stayed where it was.
    pub published: bool,
    /// The head after the deploy.
    pub head: Option<String>,
}

/// One event of a definition's stream, as history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionHistoryEntry {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// The event.
    pub event: DefinitionEvent,
}

/// A definition's stream, folded and with its history.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionInfo {
    /// `document.namespace`.
    pub namespace: String,
    /// `document.name`.
    pub name: String,
    /// The fold.
    pub state: DefinitionState,
    /// The events.
    pub history: Vec<DefinitionHistoryEntry>,
}

/// Registry of definitions known to this process, backed by the store.
#[derive(Clone)]
pub struct Definitions {
    store: Arc<dyn EventStore>,
    compiled: Arc<Mutex<HashMap<String, Arc<Decider>>>>,
}

impl Definitions {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Definitions {
            store,
            compiled: Arc::default(),
        }
    }

    /// Deploys `def` as [`PublishOptions::default`] says; see [`Definitions::publish`].
    pub async fn register(&self, def: Workflow) -> Result<DefinitionRef> {
        Ok(self
            .publish(def, PublishOptions::default())
            .await?
            .definition)
    }

    /// Deploys `def`: records its content and publishes its version label in the definition's
    /// stream, moving the head to it, so that runs and sub-workflows find it by namespace, name
    /// and version (or `latest`). A label that already holds this content changes nothing
    /// ([`Deployed::published`] is false); one that holds other content is refused
    /// ([`Error::VersionLabelTaken`]).
    pub async fn publish(&self, def: Workflow, opts: PublishOptions) -> Result<Deployed> {
        let (hash, source) = content_hash(&def)?;
        let r = DefinitionRef {
            namespace: def.document.namespace.clone(),
            name: def.document.name.clone(),
            version: def.document.version.clone(),
            hash: hash.clone(),
        };
        let mut stored = StoredDefinition {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            version: r.version.clone(),
            hash: hash.clone(),
            source,
            deployed: false,
        };
        let actor = Actor {
            by: opts.by,
            at: crate::clock::now_ms(),
        };
        let decide = |state: &DefinitionState| {
            state
                .publish(&r.version, &hash, opts.note.clone(), &actor)
                .map_err(|e| command_error(&r.namespace, &r.name, e))
        };
        // A refusal or a no-op is known before anything is written; otherwise the content
        // goes in before the events that name it.
        let (state, _) = self.load(&r.namespace, &r.name).await?;
        let mut published = false;
        let state = if decide(&state)?.is_empty() {
            state
        } else {
            self.store.put_definition(&stored).await?;
            self.command_with(&r.namespace, &r.name, |state| {
                let events = decide(state)?;
                published = !events.is_empty();
                Ok(events)
            })
            .await?
        };
        if published {
            stored.deployed = true;
            self.store.put_definition(&stored).await?;
        }
        if let Ok(mut m) = self.compiled.lock() {
            m.entry(hash)
                .or_insert_with(|| Arc::new(Decider::new(Arc::new(def))));
        }
        Ok(Deployed {
            definition: r,
            published,
            head: state.head,
        })
    }

    /// Records `def` only so that a run can be pinned to it: found by hash, never by version or
    /// `latest` (unless the same content is, or gets, published).
    pub async fn register_inline(&self, def: Workflow) -> Result<DefinitionRef> {
        let (hash, source) = content_hash(&def)?;
        let r = DefinitionRef {
            namespace: def.document.namespace.clone(),
            name: def.document.name.clone(),
            version: def.document.version.clone(),
            hash: hash.clone(),
        };
        let known = self
            .compiled
            .lock()
            .map(|m| m.contains_key(&hash))
            .unwrap_or(false);
        if !known {
            self.store
                .put_definition(&StoredDefinition {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    version: r.version.clone(),
                    hash: hash.clone(),
                    source,
                    deployed: false,
                })
                .await?;
            if let Ok(mut m) = self.compiled.lock() {
                m.entry(hash)
                    .or_insert_with(|| Arc::new(Decider::new(Arc::new(def))));
            }
        }
        Ok(r)
    }

    /// Moves the head of `namespace/name` to the published version `to` (a rollback, or a roll
    /// forward): new runs that name no version start on it; runs in flight keep theirs. Returns
    /// the state after, and whether the head moved (false: it was there already).
    pub async fn roll_back(
        &self,
        namespace: &str,
        name: &str,
        to: &str,
        by: &str,
    ) -> Result<(DefinitionState, bool)> {
        let actor = Actor {
            by: by.to_string(),
            at: crate::clock::now_ms(),
        };
        let mut moved = false;
        let state = self
            .command_with(namespace, name, |state| {
                let events = state
                    .roll_back(to, &actor)
                    .map_err(|e| command_error(namespace, name, e))?;
                moved = !events.is_empty();
                Ok(events)
            })
            .await?;
        Ok((state, moved))
    }

    /// Deprecates version `version` of `namespace/name`: new runs of it are refused, runs in
    /// flight go on. The head cannot be deprecated ([`Error::HeadDeprecation`]). Returns the
    /// state after, and whether anything changed (false: deprecated already).
    pub async fn deprecate(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        reason: Option<String>,
        by: &str,
    ) -> Result<(DefinitionState, bool)> {
        let actor = Actor {
            by: by.to_string(),
            at: crate::clock::now_ms(),
        };
        let mut changed = false;
        let state = self
            .command_with(namespace, name, |state| {
                let events = state
                    .deprecate(version, reason.clone(), &actor)
                    .map_err(|e| command_error(namespace, name, e))?;
                changed = !events.is_empty();
                Ok(events)
            })
            .await?;
        Ok((state, changed))
    }

    /// Folds the stream, decides with `decide`, appends what it decided at the folded sequence,
    /// and on a lost race does it all again. Returns the state after.
    async fn command_with<F>(
        &self,
        namespace: &str,
        name: &str,
        mut decide: F,
    ) -> Result<DefinitionState>
    where
        F: FnMut(&DefinitionState) -> Result<Vec<DefinitionEvent>>,
    {
        let stream = stream_id(namespace, name);
        let mut last = None;
        for _ in 0..MAX_RACES {
            let (mut state, _) = self.load(namespace, name).await?;
            let events = decide(&state)?;
            if events.is_empty() {
                return Ok(state);
            }
            let request = AppendRequest {
                aggregate_type: DEFINITION_AGGREGATE.into(),
                stream: stream.clone(),
                expected_sequence: state.sequence,
                events: events.iter().map(new_event).collect(),
                run_summary: None,
                lease: Lease::External,
            };
            match self.store.append(vec![request]).await {
                Ok(_) => {
                    for e in &events {
                        state.apply(e);
                    }
                    return Ok(state);
                }
                Err(e @ StoreError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| StoreError::Unavailable("definition stream contended".into()))
            .into())
    }

    /// The fold of `namespace/name`'s stream and its events (an empty state when it has none).
    pub async fn load(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(DefinitionState, Vec<DefinitionHistoryEntry>)> {
        let stream = stream_id(namespace, name);
        let stored = self.store.load(DEFINITION_AGGREGATE, &stream, 0).await?;
        fold(&stream, &stored)
    }

    /// Every definition with a stream, by namespace and name.
    pub async fn list(&self) -> Result<Vec<DefinitionInfo>> {
        let all = self.store.definition_events().await?;
        let mut out: Vec<DefinitionInfo> = Vec::new();
        let mut start = 0;
        while start < all.len() {
            let stream = &all[start].stream;
            let end = all[start..]
                .iter()
                .position(|e| e.stream != *stream)
                .map_or(all.len(), |n| start + n);
            let (state, history) = fold(stream, &all[start..end])?;
            let (namespace, name) = stream.split_once('/').unwrap_or((stream.as_str(), ""));
            out.push(DefinitionInfo {
                namespace: namespace.to_string(),
                name: name.to_string(),
                state,
                history,
            });
            start = end;
        }
        Ok(out)
    }

    /// The published version `version` (`latest`: the head) of `namespace/name` and its
    /// stored content, deprecated or not (for showing it; starting runs uses
    /// [`Definitions::find`]).
    pub async fn show(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<(DefinitionState, StoredDefinition)> {
        let (state, _) = self.load(namespace, name).await?;
        let v = if version == LATEST {
            state.head_version()
        } else {
            state.version(version)
        };
        let hash = v
            .ok_or_else(|| Error::DefinitionNotDeployed {
                namespace: namespace.to_string(),
                name: name.to_string(),
                version: version.to_string(),
            })?
            .hash
            .clone();
        let mut stored = self
            .store
            .definition_by_hash(&hash)
            .await?
            .ok_or(Error::DefinitionNotFound { hash })?;
        // The label the stream gives, which is the document's own for published content.
        stored.version = v.map(|v| v.label.clone()).unwrap_or_default();
        Ok((state, stored))
    }

    /// The structural diff of two published versions of `namespace/name` (`latest` names the
    /// head).
    pub async fn diff(
        &self,
        namespace: &str,
        name: &str,
        from: &str,
        to: &str,
    ) -> Result<DefinitionDiff> {
        let (_, a) = self.show(namespace, name, from).await?;
        let (_, b) = self.show(namespace, name, to).await?;
        Ok(diff_json(&a.source, &b.source))
    }

    /// The decider of the definition with content `hash`.
    pub async fn decider(&self, hash: &str) -> Result<Arc<Decider>> {
        if let Some(d) = self.compiled.lock().ok().and_then(|m| m.get(hash).cloned()) {
            return Ok(d);
        }
        let stored = self.store.definition_by_hash(hash).await?.ok_or_else(|| {
            Error::DefinitionNotFound {
                hash: hash.to_string(),
            }
        })?;
        let def: Workflow =
            serde_json::from_value(stored.source).map_err(|source| Error::CorruptDefinition {
                hash: hash.to_string(),
                source,
            })?;
        let d = Arc::new(Decider::new(Arc::new(def)));
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(hash.to_string(), d.clone());
        }
        Ok(d)
    }

    /// The published definition a new run of `namespace/name` `version` starts on (`latest`:
    /// the head). `None` when no such version is published; [`Error::VersionDeprecated`] when
    /// it is deprecated.
    pub async fn find(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<DefinitionRef>> {
        let (state, _) = self.load(namespace, name).await?;
        match state.resolve_for_start(version) {
            Ok(v) => Ok(Some(DefinitionRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
                version: v.label.clone(),
                hash: v.hash.clone(),
            })),
            Err(
                DefinitionCommandError::UnknownVersion { .. }
                | DefinitionCommandError::NothingPublished,
            ) => Ok(None),
            Err(e) => Err(command_error(namespace, name, e)),
        }
    }
}

fn fold(
    stream: &str,
    stored: &[StoredEvent],
) -> Result<(DefinitionState, Vec<DefinitionHistoryEntry>)> {
    let mut state = DefinitionState::default();
    let mut history = Vec::with_capacity(stored.len());
    for e in stored {
        let event =
            DefinitionEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone())
                .map_err(|source| Error::CorruptDefinitionEvent {
                    stream: stream.to_string(),
                    sequence: e.sequence,
                    source,
                })?;
        state.apply(&event);
        history.push(DefinitionHistoryEntry {
            sequence: e.sequence,
            event,
        });
    }
    Ok((state, history))
}

/// The runtime's error for a refused definition command.
fn command_error(namespace: &str, name: &str, e: DefinitionCommandError) -> Error {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    match e {
        DefinitionCommandError::LabelTaken {
            label,
            existing,
            new,
        } => Error::VersionLabelTaken {
            namespace,
            name,
            version: label,
            existing,
            new,
        },
        DefinitionCommandError::UnknownVersion { label } => Error::DefinitionNotDeployed {
            namespace,
            name,
            version: label,
        },
        DefinitionCommandError::Deprecated { label } => Error::VersionDeprecated {
            namespace,
            name,
            version: label,
        },
        DefinitionCommandError::HeadDeprecation { label } => Error::HeadDeprecation {
            namespace,
            name,
            version: label,
        },
        // `NothingPublished`, and what a later core adds: no version to act on.
        _ => Error::DefinitionNotDeployed {
            namespace,
            name,
            version: LATEST.into(),
        },
    }
}
