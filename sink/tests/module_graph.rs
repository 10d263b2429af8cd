//! The structure rule of ARCHITECTURE.md, checked mechanically: in no crate of
//! the workspace does a module import one that imports it back (directly or
//! through others). A module is a top-level module of a crate (`src/ingest/`
//! with everything below it is one module, `src/state.rs` another); an import
//! is any `crate::name` path outside comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` lists several.
            if name.is_empty() && after.starts_with('{') {
                let list = &after[1..after.find('}').unwrap_or(after.len())];
                for item in list.split(',') {
                    let item: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !item.is_empty() {
                        out.insert(item);
                    }
                }
            } else if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut g = Graph::new();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let deps = g.entry(m.clone()).or_default();
        for d in imports(&text) {
            if d != m && modules.contains(&d) {
                deps.insert(d);
            }
        }
    }
    g
}

/// A cycle, if any, as the list of modules along it.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["proto", "sink", "generator"] {
        let g = graph(&root.join(krate).join("src"));
        assert!(g.len() >= 5, "{krate}: too few modules found: {g:?}");
        if let Some(c) = find_cycle(&g) {
            panic!("{krate}: import circle {}", c.join(" -> "));
        }
    }
}

/// The checker itself finds a circle, including one through a `crate::{..}` list.
#[test]
fn the_check_sees_a_circle() {
    let mut g = Graph::new();
    for (m, text) in [
        ("a", "use crate::{b, c::X};"),
        ("b", "fn f() { crate::c::g() }"),
        ("c", "use crate::a::Y; // crate::b in a comment"),
    ] {
        g.insert(m.into(), imports(text));
    }
    assert_eq!(g["a"], BTreeSet::from(["b".into(), "c".into()]));
    assert_eq!(g["c"], BTreeSet::from(["a".into()]));
    let cycle = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}
