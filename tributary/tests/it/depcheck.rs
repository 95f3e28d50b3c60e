//! The crate graph of DESIGN.md: formats never depend on DataFusion, role crates never depend
//! on each other (what two roles share lives in a crate of its own: `parquet_file`, `dedup`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn formats_do_not_depend_on_datafusion_and_roles_not_on_each_other() {
    let graph = workspace_dependencies();
    for format in ["line_protocol", "catalog", "wal", "parquet_file"] {
        let deps = &graph[format];
        assert!(
            !deps.iter().any(|d| d.starts_with("datafusion")),
            "{format} must not depend on DataFusion: {deps:?}"
        );
    }
    let roles = ["ingester", "querier", "router", "compactor"];
    for role in roles {
        let Some(deps) = graph.get(role) else {
            continue;
        };
        for other in roles {
            assert!(!deps.contains(other), "{role} must not depend on {other}");
        }
    }
}
