//! The crate's structure: its modules form layers (types at the bottom,
//! the front door on top), so no module depends, directly or through
//! others, on itself, and no source file (of any crate) grows past the
//! size one reader can hold. Read from the source, so a new `use` that closes a cycle
//! fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Longest source file, in lines (tests included).
const MAX_LINES: usize = 650;

/// Each module's source (a directory module's files joined), without
/// comments and without its `#[cfg(test)]` part.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let module = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "tests" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap();
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            out.entry(module).or_default().push_str(&code);
        }
    }
    out
}

/// The modules each module names through `crate::`.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(name, code)| {
            let mut deps = BTreeSet::new();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let mut names = vec![];
                if let Some(group) = rest.strip_prefix('{') {
                    // use crate::{a::X, b::{Y, Z}};
                    let mut depth = 1;
                    let mut item = String::new();
                    for c in group.chars() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        if depth == 1 && c == ',' || depth == 0 {
                            names.push(item.trim().to_string());
                            item.clear();
                        } else {
                            item.push(c);
                        }
                        if depth == 0 {
                            break;
                        }
                    }
                } else {
                    names.push(rest.to_string());
                }
                for n in names {
                    let m: String = n
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains_key(&m) && &m != name {
                        deps.insert(m);
                    }
                }
            }
            (name.clone(), deps)
        })
        .collect()
}

/// The modules on or behind a cycle (Kahn: peel off modules whose
/// dependencies are all peeled; what stays cannot be ordered).
fn on_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut remaining = edges.clone();
    loop {
        let leaves: Vec<String> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            return remaining;
        }
        for m in leaves {
            remaining.remove(&m);
        }
    }
}

#[test]
fn the_module_graph_has_no_cycle() {
    let modules = modules();
    assert!(modules.contains_key("types") && modules.contains_key("front"));
    let edges = edges(&modules);
    let cyclic = on_cycles(&edges);
    assert!(
        cyclic.is_empty(),
        "modules on a dependency cycle: {cyclic:#?}"
    );
    // The vocabulary is the bottom layer.
    assert!(
        edges["types"].iter().all(|d| d == "error"),
        "types must depend on nothing but error: {:?}",
        edges["types"]
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let mut modules = BTreeMap::new();
    modules.insert("a".to_string(), "use crate::{b::X, c::{Y, Z}};".to_string());
    modules.insert("b".to_string(), "fn f() { crate::a::g() }".to_string());
    modules.insert("c".to_string(), String::new());
    let edges = edges(&modules);
    assert_eq!(
        edges["a"],
        BTreeSet::from(["b".to_string(), "c".to_string()])
    );
    assert_eq!(edges["b"], BTreeSet::from(["a".to_string()]));
    let cyclic = on_cycles(&edges);
    assert_eq!(cyclic.keys().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn no_source_file_is_too_long() {
    // Every crate of the workspace, not only this one.
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack: Vec<_> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    assert!(stack.len() >= 8, "the crates were not found");
    let mut long = vec![];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > MAX_LINES {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these along their concepts: {long:?}"
    );
}
