//! Paths of the repository, copying and hashing trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use touchline_schemas::Sha256;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `tests/data/<rel>` at the workspace root.
pub fn data(rel: &str) -> PathBuf {
    repo_root().join("tests/data").join(rel)
}

/// Copies a directory tree (regular files and directories).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Copies the example fleet (`fleet-manifests/`) to `to`.
pub fn example_fleet(to: &Path) {
    copy_tree(&repo_root().join("fleet-manifests"), to);
}

/// Every regular file under `dir`: relative path → sha256 of its content.
/// (A file removed between listing and reading is skipped.)
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if let Ok(bytes) = std::fs::read(e.path()) {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, Sha256::digest(&bytes).to_hex());
            }
        }
    }
    out
}
