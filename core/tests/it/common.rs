//! Helpers shared by the integration tests of `cairn-core`: where the spec material is, and the
//! workflow documents it holds.

use std::path::{Path, PathBuf};

/// The Serverless Workflow spec folder: `$CAIRN_SPEC_DIR`, or `../shared/spec/serverless-workflow`
/// beside the repository. `None` (after a loud message) when it is missing outside CI; a panic
/// when it is missing under `CI=true`.
pub fn spec_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("CAIRN_SPEC_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/serverless-workflow"),
    };
    if dir.join("schema/workflow.yaml").is_file() {
        return Some(dir);
    }
    let message = format!(
        "SKIPPED: the Serverless Workflow spec is not at {} (set CAIRN_SPEC_DIR)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}; it is required under CI");
    }
    eprintln!("\n!!!!!!!! {message} !!!!!!!!\n");
    None
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One workflow document of the corpus.
pub struct Doc {
    /// Where it comes from, for messages (`examples/for.yaml`, `ctk/flow.feature#2`).
    pub name: String,
    /// The YAML text.
    pub text: String,
}

/// The `.yaml` files of `dir`, sorted by name.
pub fn yaml_files(dir: &Path, label: &str) -> Vec<Doc> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Doc {
            name: format!(
                "{label}/{}",
                p.file_name().expect("file name").to_string_lossy()
            ),
            text: std::fs::read_to_string(&p).expect("readable file"),
        })
        .collect()
}

/// The doc strings that follow `Given a workflow with definition:` in the CTK's feature files,
/// dedented by the column of their opening `"""`.
pub fn ctk_workflows(spec: &Path) -> Vec<Doc> {
    let dir = spec.join("ctk/features");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ctk/features")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable feature");
        let file = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        let mut n = 0;
        while i < lines.len() {
            if !lines[i].contains("Given a workflow with definition:") {
                i += 1;
                continue;
            }
            i += 1;
            while i < lines.len() && lines[i].trim().is_empty() {
                i += 1;
            }
            let open = lines.get(i).copied().unwrap_or_default();
            assert!(
                open.trim_start().starts_with("\"\"\""),
                "{file}: no doc string after the step"
            );
            let indent = open.len() - open.trim_start().len();
            i += 1;
            let mut body = String::new();
            while i < lines.len() && lines[i].trim() != "\"\"\"" {
                let line = lines[i];
                let cut = line.len() - line.trim_start().len();
                body.push_str(&line[cut.min(indent)..]);
                body.push('\n');
                i += 1;
            }
            n += 1;
            out.push(Doc {
                name: format!("ctk/{file}#{n}"),
                text: body,
            });
        }
    }
    out
}
