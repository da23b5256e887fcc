//! The library's modules form no circle (issue 17): a newcomer can change a module knowing
//! everything it depends on sits below it. The graph is read from the sources: every
//! `crate::` path (and `super::` from a nested file), at the granularity of the top-level
//! modules and of store's submodules, with the crate root's re-exports resolved to the module
//! that defines the item. No network, no database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where an edge was first seen, so a failure points at the line to change.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn library_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let edge_count: usize = graph.values().map(|targets| targets.len()).sum();
    // The parser must have seen the crate: a graph this small means it read nothing.
    assert!(
        edge_count > 40,
        "only {edge_count} module dependencies found; is the parser broken?\n{graph:#?}"
    );
    assert!(graph.contains_key("store::sqlite") && graph.contains_key("bridge"), "{graph:#?}");
    let circles = circles(&graph);
    assert!(
        circles.is_empty(),
        "module circles (each edge with the line that makes it):\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_through_a_grouped_import_and_a_root_reexport_is_found() {
    let modules: BTreeSet<String> = ["a", "b", "c", "store", "store::x", "store::y"].map(String::from).into();
    let reexports = BTreeMap::from([("Thing".to_string(), "c".to_string())]);
    let mut graph = Edges::new();
    let files = [
        ("a", "src/a.rs", "use crate::{b::{self, Foo}, schema_not_a_module};\n// crate::c in a comment\n"),
        ("b", "src/b.rs", "let s = \"crate::a in a string\"; fn f() -> crate::Thing { todo!() }"),
        ("c", "src/c.rs", "use crate::a::X;"),
        ("store::x", "src/store/x.rs", "use super::y::Z; use super::*;"),
        ("store::y", "src/store/y.rs", "fn g(_: &crate::store::x::W) {}"),
    ];
    for (module, path, text) in files {
        add_edges(&mut graph, module, path, text, &modules, &reexports);
    }
    let found = circles(&graph);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("a -> b -> c -> a"), "{found:?}");
    assert!(found[1].starts_with("store::x -> store::y -> store::x"), "{found:?}");
    // Comments and strings are not dependencies.
    assert!(!graph["b"].contains_key("a"), "{graph:?}");
    assert!(!graph["a"].contains_key("c"), "{graph:?}");
}

/// The nodes: lib.rs's `mod` items, plus `store::<file>` for store's submodules.
fn module_graph(src: &Path) -> Edges {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let lib_code = strip_comments_and_strings(&lib);
    let mut modules = BTreeSet::new();
    for line in lib_code.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "mod") {
            if let Some(name) = words.get(at + 1).and_then(|n| n.strip_suffix(';')) {
                modules.insert(name.to_string());
            }
        }
    }
    for entry in std::fs::read_dir(src.join("store")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if stem != "mod" {
            modules.insert(format!("store::{stem}"));
        }
    }
    // `crate::Bridge` means the module lib.rs re-exports `Bridge` from.
    let mut reexports = BTreeMap::new();
    for item in lib_code.split(';') {
        let item = item.trim();
        let Some(rest) = item.strip_prefix("pub use ") else { continue };
        for path in expand_tree(rest) {
            if let (Some(module), Some(name)) = (node_of(&path, &modules), path.last()) {
                reexports.insert(name.clone(), module);
            }
        }
    }
    let mut graph = Edges::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let parts: Vec<String> =
            relative.iter().map(|p| p.to_str().unwrap().trim_end_matches(".rs").to_string()).collect();
        // The binary and the root (which only declares and re-exports) are not library modules.
        if parts[0] == "bin" || parts[0] == "lib" {
            continue;
        }
        let module = if parts[0] == "store" && parts.len() > 1 && parts[1] != "mod" {
            format!("store::{}", parts[1])
        } else {
            parts[0].clone()
        };
        if !modules.contains(&module) {
            continue; // a file compiled only into the binary through `#[path]`
        }
        let text = std::fs::read_to_string(&file).unwrap();
        add_edges(&mut graph, &module, &relative.display().to_string(), &text, &modules, &reexports);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Adds the edges of one file; `super::` is resolved against the file's place in the tree.
fn add_edges(
    graph: &mut Edges,
    module: &str,
    path: &str,
    text: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) {
    graph.entry(module.to_string()).or_default();
    let code = strip_comments_and_strings(text);
    // src/a/b.rs: `super` is `crate::a`; src/a/mod.rs and src/a.rs: `super` is the root.
    let dirs: Vec<&str> = path.trim_start_matches("src/").split('/').collect();
    let super_prefix: Vec<String> = if dirs.len() >= 2 && !path.ends_with("mod.rs") {
        dirs[..dirs.len() - 1].iter().map(|d| d.to_string()).collect()
    } else {
        Vec::new()
    };
    for (keyword, prefix) in [("crate::", Vec::new()), ("super::", super_prefix)] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `other_crate::`, `super::super::` (its inner half), a longer path
            }
            let rest = &code[from..];
            for tail in expand_tree(&take_path(rest)) {
                if keyword == "super::" && tail.first().is_some_and(|s| s == "*") {
                    continue; // a test module's `use super::*` is its own file
                }
                let mut full = prefix.clone();
                full.extend(tail);
                let target = node_of(&full, modules).or_else(|| {
                    if full.len() == 1 {
                        reexports.get(&full[0]).cloned()
                    } else {
                        None
                    }
                });
                if let Some(target) = target.filter(|t| t != module) {
                    let line = code[..at].matches('\n').count() + 1;
                    graph
                        .entry(module.to_string())
                        .or_default()
                        .entry(target)
                        .or_insert_with(|| format!("{path}:{line}"));
                }
            }
        }
    }
}

/// The module a path (segments after `crate::`) lands in, if it is one of the nodes.
fn node_of(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let first = path.first()?;
    if first == "store" {
        if let Some(sub) = path.get(1).map(|s| format!("store::{s}")).filter(|s| modules.contains(s)) {
            return Some(sub);
        }
    }
    modules.contains(first).then(|| first.clone())
}

/// The text of one path starting right after `crate::`, up to where the path ends: a
/// `{...}` group is taken whole.
fn take_path(rest: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    for c in rest.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':' || c == '*') => break,
            _ => {}
        }
        out.push(c);
        if depth == 0 && c == '}' {
            break;
        }
    }
    out
}

/// `a::{b, c::{d, self}}` into `[a, b]`, `[a, c, d]`, `[a, c, self]`.
fn expand_tree(text: &str) -> Vec<Vec<String>> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = text.find('{') else {
        let segments: Vec<String> = text.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
        return if segments.is_empty() { Vec::new() } else { vec![segments] };
    };
    let head: Vec<String> = text[..open].split("::").filter(|s| !s.is_empty()).map(String::from).collect();
    let inner = &text[open + 1..text.rfind('}').unwrap_or(text.len())];
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let mut pieces = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                pieces.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&inner[start..]);
    for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
        for tail in expand_tree(piece) {
            let mut full = head.clone();
            full.extend(tail);
            out.push(full);
        }
    }
    out
}

/// The source with comments and the contents of string and char literals blanked (newlines
/// kept, so line numbers stay right).
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars[..i].last().is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // r"..." or r#"..."#: ends at a quote followed by as many hashes.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(chars[j]));
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    out.push(blank(ch));
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A char literal ('x', '\n', '\''); a lifetime ('a) has no closing quote.
            i += 1;
            if chars.get(i) == Some(&'\\') {
                i += 1;
            }
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Every strongly connected group of more than one module, written as one circle through it
/// (`a -> b -> a`) followed by the lines that make its edges.
fn circles(graph: &Edges) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        let group: BTreeSet<String> =
            reachable(graph, start).into_iter().filter(|m| reachable(graph, m).contains(start)).collect();
        seen.extend(group.iter().cloned());
        if group.len() < 2 {
            continue;
        }
        // A shortest way back to `start` inside the group, by breadth-first search.
        let mut previous: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut closing = None;
        'search: while let Some(at) = queue.pop_front() {
            for next in graph.get(&at).into_iter().flat_map(|t| t.keys()) {
                if next == start {
                    closing = Some(at.clone());
                    break 'search;
                }
                if group.contains(next) && !previous.contains_key(next) {
                    previous.insert(next.clone(), at.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        let mut path = vec![start.clone()];
        let mut at = closing.unwrap();
        while &at != start {
            path.push(at.clone());
            at = previous[&at].clone();
        }
        path.push(start.clone());
        let last = path.len() - 1;
        path[1..last].reverse();
        let mut text = path.join(" -> ");
        let within: Vec<String> = group.iter().cloned().collect();
        text.push_str(&format!("   (group: {})", within.join(", ")));
        for pair in path.windows(2) {
            text.push_str(&format!("\n    {} -> {} at {}", pair[0], pair[1], graph[&pair[0]][&pair[1]]));
        }
        // Every dependency inside the group: breaking the circle means removing some of these.
        text.push_str("\n  all dependencies within the group:");
        for from in &group {
            for (to, place) in graph.get(from).into_iter().flatten().filter(|(to, _)| group.contains(*to)) {
                text.push_str(&format!("\n    {from} -> {to} at {place}"));
            }
        }
        out.push(text);
    }
    out
}

fn reachable(graph: &Edges, from: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(at) = stack.pop() {
        for next in graph.get(&at).into_iter().flat_map(|t| t.keys()) {
            if found.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    found
}
