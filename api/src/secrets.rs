//! Secrets for `$secrets` and secret-based authentication: a JSON or YAML file of
//! `name: value` pairs, named by `--secrets` or `CAIRN_SECRETS_FILE`.

use std::path::Path;

use cairn_core::activity::SecretSource;
use serde_json::{Map, Value};

/// Secrets read once from a file.
#[derive(Debug, Default, Clone)]
pub struct FileSecrets(Map<String, Value>);

impl FileSecrets {
    /// Reads `path`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read secrets file {}: {e}", path.display()))?;
        let v: Value = serde_norway::from_str(&text).map_err(|e| {
            anyhow::anyhow!("secrets file {} is not YAML or JSON: {e}", path.display())
        })?;
        match v {
            Value::Object(m) => Ok(FileSecrets(m)),
            _ => anyhow::bail!(
                "secrets file {} must hold a mapping of names to values",
                path.display()
            ),
        }
    }
}

impl SecretSource for FileSecrets {
    fn get(&self, name: &str) -> Option<Value> {
        self.0.get(name).cloned()
    }
    fn all(&self) -> Map<String, Value> {
        self.0.clone()
    }
}
