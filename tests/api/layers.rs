//! Imports only go down. Each module of `src/` may use the modules of the layers below its
//! own, and its own submodules, and nothing else: no circle, no front door using another,
//! no store reaching for upstream. Read from the source itself (every `crate::` and
//! `super::` path outside comments), so a new import that breaks the order fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// From the bottom: what a chat is; errors; configuration; store and upstream; the turn
/// engine; the guards and the helpers every door shares; the state built at cold start;
/// the front doors; the router; the Lambda side; the cold start.
const LAYERS: &[&[&str]] = &[
    &["chat", "clock", "seal", "tls", "telemetry", "init_error"],
    &["tokens", "http"],
    &["error", "cors"],
    &["config"],
    &["store", "upstream", "handoff"],
    &["request_log"],
    &["budget"],
    &["turn"],
    &["guard", "body", "idempotency", "paging", "routes", "live"],
    &["app"],
    &[
        "api",
        "api::seed",
        "api::openai",
        "api::usage",
        "api::files",
        "api::responses",
        "api::conversations",
    ],
    &["router"],
    &["lambda"],
    &["startup"],
];

/// The layer of a unit, and the unit a module path belongs to (`api::openai::replay` is
/// the unit `api::openai`, `store::redis::keys` the unit `store`).
fn unit_of(path: &[String]) -> Option<(String, usize)> {
    for take in (1..=path.len().min(2)).rev() {
        let name = path[..take].join("::");
        for (layer, units) in LAYERS.iter().enumerate() {
            if units.contains(&name.as_str()) {
                return Some((name, layer));
            }
        }
    }
    None
}

/// The module path of a file under `src/`: `src/api/openai/mod.rs` is `api::openai`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments (line comments, doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first two segments of every path a file names from `crate::` or `super::`, as
/// module paths from the crate's root.
fn imports(module: &[String], code: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for (start, prefix) in [("crate::", None), ("super::", Some(()))] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let base: Vec<String> = match prefix {
                None => Vec::new(),
                // `super` of a file's module (a `mod tests` inside it is the file's own).
                Some(()) => module[..module.len().saturating_sub(1)].to_vec(),
            };
            for path in paths(rest) {
                let mut full = base.clone();
                full.extend(path);
                found.insert(full);
            }
        }
    }
    found
}

/// The paths at the start of `text`: `a::b`, or each of a `{a::b, c, d::{e, f}}` group.
fn paths(text: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> (String, usize) {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        (s[..end].to_owned(), end)
    };
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current);
        return items
            .iter()
            .map(|item| item.trim())
            .filter(|item| !item.is_empty() && *item != "self")
            .flat_map(|item| paths(item).into_iter().take(1))
            .collect();
    }
    let (first, end) = ident(text);
    if first.is_empty() {
        return Vec::new();
    }
    let mut path = vec![first];
    if let Some(after) = text[end..].strip_prefix("::") {
        let (second, _) = ident(after);
        if !second.is_empty() {
            path.push(second);
        }
    }
    vec![path]
}

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

/// Every import of `files` (module path, source) that does not go down, as a line each.
fn upward(files: &[(Vec<String>, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (module, code) in files {
        let Some((own, layer)) = unit_of(module) else {
            problems.push(format!("src/{} is in no layer", module.join("/")));
            continue;
        };
        for path in imports(module, &self::code(code)) {
            let Some((target, target_layer)) = unit_of(&path) else {
                continue;
            };
            if target != own && target_layer >= layer {
                problems.push(format!(
                    "{own} (layer {layer}) uses {target} (layer {target_layer})"
                ));
            }
        }
    }
    problems
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<(Vec<String>, String)> = files
        .iter()
        .map(|file| {
            (
                module_of(&src, file),
                code(&std::fs::read_to_string(file).unwrap()),
            )
        })
        // The crate's root and the binary only name modules; they sit above everything.
        .filter(|(module, _)| !matches!(module.as_slice(), [one] if one == "lib" || one == "main"))
        .collect();
    assert!(modules.len() > 40, "read {} files", modules.len());
    let problems = upward(&modules);
    assert!(
        problems.is_empty(),
        "imports that do not go down:\n{}",
        problems.join("\n")
    );
}

#[test]
fn an_import_up_or_across_is_caught() {
    let file = |module: &str, code: &str| {
        (
            module.split("::").map(str::to_owned).collect::<Vec<_>>(),
            code.to_owned(),
        )
    };
    let files = [
        // Down: fine.
        file(
            "turn::record",
            "use crate::store::Store;\nuse super::prepare::Ready;",
        ),
        file(
            "api::seed",
            "use crate::{app::App, http::{json_body, replayed}};",
        ),
        // Up, across doors, and across siblings of a layer.
        file("store::redis", "use crate::turn::TurnEngine;"),
        file("api::openai", "use crate::api::seed::replayed;"),
        file("api::usage", "use super::files::serve;"),
        file(
            "upstream",
            "    let x = crate::store::StoreError::new(\"\");",
        ),
        // A comment is no import.
        file("chat", "// see crate::store for how it is kept"),
    ];
    assert_eq!(
        upward(&files),
        [
            "store (layer 4) uses turn (layer 7)",
            "api::openai (layer 10) uses api::seed (layer 10)",
            "api::usage (layer 10) uses api::files (layer 10)",
            "upstream (layer 4) uses store (layer 4)",
        ]
    );
}
