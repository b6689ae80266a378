//! Definitions: content-addressed, stored in the event store, and compiled once into a
//! [`Decider`] that every run pinned to that content shares.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cairn_core::decider::Decider;
use cairn_core::dsl::{Problem, Workflow};
use cairn_core::events::DefinitionRef;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{EventStore, StoredDefinition};
use crate::{Error, Result};

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

/// Registry of definitions known to this process, backed by the store.
#[derive(Clone)]
pub struct Definitions {
    store: Arc<dyn EventStore>,
    compiled: Arc<Mutex<HashMap<String, Arc<Decider>>>>,
    /// Hashes this process recorded as deployed (the store needs no second write for them).
    deployed: Arc<Mutex<HashSet<String>>>,
}

impl Definitions {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Definitions {
            store,
            compiled: Arc::default(),
            deployed: Arc::default(),
        }
    }

    /// Deploys `def`: records it in the store (idempotent) so that runs and sub-workflows can
    /// find it by namespace, name and version, and returns its reference.
    pub async fn register(&self, def: Workflow) -> Result<DefinitionRef> {
        self.record(def, true).await
    }

    /// Records `def` only so that a run can be pinned to it: found by hash, never by version or
    /// `latest` (unless the same content is, or gets, deployed).
    pub async fn register_inline(&self, def: Workflow) -> Result<DefinitionRef> {
        self.record(def, false).await
    }

    async fn record(&self, def: Workflow, deployed: bool) -> Result<DefinitionRef> {
        let (hash, source) = content_hash(&def)?;
        let r = DefinitionRef {
            namespace: def.document.namespace.clone(),
            name: def.document.name.clone(),
            version: def.document.version.clone(),
            hash: hash.clone(),
        };
        // Compiled here means stored here (in some form); deployed content needs the flag too.
        let known = if deployed {
            self.deployed
                .lock()
                .map(|s| s.contains(&hash))
                .unwrap_or(false)
        } else {
            self.compiled
                .lock()
                .map(|m| m.contains_key(&hash))
                .unwrap_or(false)
        };
        if !known {
            self.store
                .put_definition(&StoredDefinition {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    version: r.version.clone(),
                    hash: hash.clone(),
                    source,
                    deployed,
                })
                .await?;
            if deployed {
                if let Ok(mut s) = self.deployed.lock() {
                    s.insert(hash.clone());
                }
            }
            if let Ok(mut m) = self.compiled.lock() {
                m.entry(hash)
                    .or_insert_with(|| Arc::new(Decider::new(Arc::new(def))));
            }
        }
        Ok(r)
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

    /// Finds a deployed definition by namespace, name and version (`latest` for the highest).
    pub async fn find(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<DefinitionRef>> {
        Ok(self
            .store
            .find_definition(namespace, name, version)
            .await?
            .map(|d| DefinitionRef {
                namespace: d.namespace,
                name: d.name,
                version: d.version,
                hash: d.hash,
            }))
    }
}
