//! Architecture guard: the crate graph stays one-directional.
//!
//! - `squib-api` (and everything it depends on) links no hypervisor crate;
//! - tokio / axum / hyper are direct dependencies only of `squib-api`, the facade (`squib`) and
//!   binaries;
//! - `squib-core` depends on no other workspace crate.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

fn metadata() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata json")
}

#[test]
fn test_should_keep_the_crate_graph_one_directional() {
    let meta = metadata();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    let mut names: BTreeMap<String, String> = BTreeMap::new(); // id -> name
    let mut is_bin: BTreeSet<String> = BTreeSet::new();
    for p in meta["packages"].as_array().expect("packages") {
        let id = p["id"].as_str().expect("id").to_owned();
        names.insert(id.clone(), p["name"].as_str().expect("name").to_owned());
        let bin = p["targets"].as_array().expect("targets").iter().any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|x| x == "bin"))
        });
        if bin {
            is_bin.insert(id);
        }
    }
    let mut deps: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new(); // id -> (dep id, normal)
    for node in meta["resolve"]["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_str().expect("id").to_owned();
        let list = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .map(|d| {
                let normal = d["dep_kinds"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|x| x["kind"].is_null()));
                (d["pkg"].as_str().expect("pkg").to_owned(), normal)
            })
            .collect();
        deps.insert(id, list);
    }
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_default();

    // Transitive normal dependencies of squib-api.
    let api = members
        .iter()
        .find(|m| name_of(m) == "squib-api")
        .expect("squib-api")
        .clone();
    let mut stack = vec![api];
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for (d, normal) in deps.get(&id).into_iter().flatten() {
            if *normal {
                stack.push(d.clone());
            }
        }
    }
    let hv: Vec<String> = seen
        .iter()
        .map(|id| name_of(id))
        .filter(|n| {
            n.starts_with("kvm-") || n == "squib-kvm" || n == "squib-hv" || n == "squib-vmm"
        })
        .collect();
    assert!(
        hv.is_empty(),
        "squib-api must not link hypervisor crates: {hv:?}"
    );

    let async_stack = ["tokio", "axum", "hyper"];
    let allowed = ["squib-api", "squib"];
    for m in &members {
        let name = name_of(m);
        let direct: Vec<String> = deps
            .get(m)
            .into_iter()
            .flatten()
            .filter(|(_, normal)| *normal)
            .map(|(d, _)| name_of(d))
            .collect();
        if !allowed.contains(&name.as_str()) && !is_bin.contains(m) {
            for a in async_stack {
                assert!(
                    !direct.iter().any(|d| d == a),
                    "{name} must not depend on {a}"
                );
            }
        }
        if name == "squib-core" {
            let internal: Vec<&String> = direct.iter().filter(|d| d.starts_with("squib")).collect();
            assert!(
                internal.is_empty(),
                "squib-core must not depend on workspace crates: {internal:?}"
            );
        }
    }
}
