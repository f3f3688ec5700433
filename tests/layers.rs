//! The crate's modules form layers: no module of `src/` imports, directly or through others,
//! a module that imports it. Read from the sources' own `crate::` / `super::` paths, as a
//! reviewer would; a new import that closes a cycle fails here, naming the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its module path (`backend::opencl::cl`).
fn modules(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut p = prefix.to_vec();
            if name != "mod" && name != "lib" {
                p.push(name);
            }
            out.push((p, path));
        }
    }
}

/// The module a path names: the longest prefix of `segments` that is a known module.
fn resolve(segments: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=segments.len()).rev().map(|n| segments[..n].to_vec()).find(|p| known.contains(p))
}

/// Paths `crate::a::b` and `super::x` in code (comments and `#[cfg(test)]` modules aside).
fn imports(module: &[String], source: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let code: String = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => source[..i].to_string(),
        None => source.to_string(),
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (start, _) in line.match_indices("crate::").chain(line.match_indices("super::")) {
            let rest = &line[start..];
            let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
            let mut segments: Vec<String> = Vec::new();
            let mut tail = rest;
            let base: Vec<String> = if let Some(t) = tail.strip_prefix("crate::") {
                tail = t;
                Vec::new()
            } else {
                let mut up = module.to_vec();
                while let Some(t) = tail.strip_prefix("super::") {
                    up.pop();
                    tail = t;
                }
                up
            };
            segments.extend(base);
            loop {
                let id = ident(tail);
                if id.is_empty() {
                    // `crate::{a, b}`: each item of the group.
                    if let Some(group) = tail.strip_prefix('{') {
                        for item in group.split(['}', ',']) {
                            let id = ident(item.trim());
                            let mut s = segments.clone();
                            s.push(id);
                            if let Some(m) = resolve(&s, known) {
                                found.insert(m);
                            }
                        }
                    }
                    break;
                }
                segments.push(id.clone());
                tail = &tail[id.len()..];
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            if let Some(m) = resolve(&segments, known) {
                found.insert(m);
            }
        }
    }
    found.remove(module);
    found.retain(|m| !m.is_empty());
    found
}

/// The layer of each module the table in `architecture.rs` (its ```text block) names,
/// bottom = 0: a row that starts with a name (`core`, `kernels`, ...) opens a layer, its
/// indented rows continue it, the `no_std` line is skipped. Words in parentheses are
/// descriptions; `a::{b, c}` names `a::b` and `a::c`.
fn layer_table(source: &str, known: &BTreeSet<Vec<String>>) -> BTreeMap<Vec<String>, usize> {
    let start = source.find("```text").expect("architecture.rs has a ```text table") + "```text".len();
    let end = start + source[start..].find("```").expect("the table ends");
    let mut rows: Vec<Vec<Vec<String>>> = Vec::new(); // top-down, one entry per layer
    for line in source[start..end].lines() {
        let line = line.trim_start_matches("//!");
        if line.trim().is_empty() || line.trim_start().starts_with("---") {
            continue;
        }
        // A layer's name in the first 12 columns opens it; indented rows continue it.
        let (label, content) = (line.get(..12).unwrap_or(line), line.get(12..).unwrap_or(""));
        if !label.trim().is_empty() {
            rows.push(Vec::new());
        }
        // Text in parentheses, and after `: `, describes; drop it.
        let mut text = String::new();
        let mut depth = 0;
        for c in content.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => text.push(c),
                _ => {}
            }
        }
        let text = text.split(": ").next().unwrap_or("").to_string();
        let layer = rows.last_mut().expect("the table starts with a layer's name");
        // `a::{b, c}` -> `a::b a::c`.
        let mut words = String::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find("::{") {
            let head_start =
                rest[..open].rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(0, |i| i + 1);
            let head = &rest[head_start..open];
            let close = open + rest[open..].find('}').expect("a group closes");
            words.push_str(&rest[..open]);
            for item in rest[open + 3..close].split(',') {
                words.push_str(&format!(" {head}::{} ", item.trim()));
            }
            rest = &rest[close + 1..];
        }
        words.push_str(rest);
        for word in words.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            let path: Vec<String> = word.split("::").map(String::from).collect();
            if known.contains(&path) {
                layer.push(path);
            }
        }
    }
    let count = rows.len();
    let mut table = BTreeMap::new();
    for (k, modules) in rows.into_iter().enumerate() {
        for m in modules {
            table.entry(m).or_insert(count - 1 - k);
        }
    }
    table
}

fn no_module_imports_a_module_that_imports_it() {
    let src = crate::support::repo().join("src");
    let mut files = Vec::new();
    modules(&src, &[], &mut files);
    let known: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let source = std::fs::read_to_string(path).unwrap();
        graph.insert(module.clone(), imports(module, &source, &known));
    }
    // The reading works: some edges exist that we know of.
    let edge = |a: &str, b: &str| {
        let a: Vec<String> = a.split("::").map(String::from).collect();
        let b: Vec<String> = b.split("::").map(String::from).collect();
        graph.get(&a).is_some_and(|s| s.contains(&b))
    };
    assert!(edge("engine", "device") && edge("backend::cpu", "cpu") && edge("cpu", "layout"), "{graph:#?}");

    // Depth-first search for a cycle.
    fn visit(
        m: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(m.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut state, &mut Vec::new()) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
    // Each import goes to the importer's layer or one below it, as the table of
    // src/architecture.rs places them; every module is in the table.
    let table = layer_table(&std::fs::read_to_string(src.join("architecture.rs")).unwrap(), &known);
    let layer_of = |m: &Vec<String>| (1..=m.len()).rev().find_map(|n| table.get(&m[..n]).copied());
    assert_eq!(layer_of(&vec!["cpu".to_string()]), Some(1), "the table reads: {table:?}");
    let mut upward = Vec::new();
    for (module, deps) in &graph {
        if module.is_empty() || module[0] == "architecture" {
            continue; // the crate root re-exports; `architecture` is documentation
        }
        let Some(here) = layer_of(module) else {
            panic!("module {} is not in the layer table of src/architecture.rs", module.join("::"));
        };
        for dep in deps {
            let there = layer_of(dep).unwrap_or(usize::MAX);
            if there > here {
                upward.push(format!("{} -> {}", module.join("::"), dep.join("::")));
            }
        }
    }
    assert!(upward.is_empty(), "imports up the layer table of src/architecture.rs: {upward:?}");

    // The bottom layer imports nothing of the crate.
    for bottom in ["error", "layout"] {
        let deps = &graph[&vec![bottom.to_string()]];
        let outside: Vec<_> = deps.iter().filter(|d| d[0] != bottom).collect();
        assert!(outside.is_empty(), "{bottom} imports {outside:?}");
    }
}

crate::tests! {
    plain no_module_imports_a_module_that_imports_it,
}
