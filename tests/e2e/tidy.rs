//! Conventions, checked like any other behaviour: every crate root opens with a `//!` overview,
//! ARCHITECTURE.md names every crate, no test is ignored without a reason, and every to-do note names an issue.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() && name != "target" && !name.starts_with('.') && name != "fixtures" {
            rust_files(&path, found);
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

fn members() -> Vec<String> {
    let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let line = manifest.lines().find(|line| line.starts_with("members = [")).expect("a members line");
    line.trim_start_matches("members = [")
        .trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn every_crate_root_has_an_overview() {
    let root = workspace_root();
    for member in members() {
        let src = root.join(&member).join("src");
        let mut roots: Vec<PathBuf> =
            ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).filter(|p| p.exists()).collect();
        if let Ok(bins) = fs::read_dir(src.join("bin")) {
            roots.extend(bins.map(|e| e.unwrap().path()));
        }
        assert!(!roots.is_empty(), "{member} has no crate root");
        for file in roots {
            let text = fs::read_to_string(&file).unwrap();
            assert!(text.starts_with("//!"), "{} must open with a `//!` overview", file.display());
        }
    }
}

#[test]
fn architecture_names_every_crate_and_the_tests() {
    let architecture = fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    for member in members().into_iter().chain(["tests".to_owned()]) {
        assert!(architecture.contains(&format!("`{member}/`")), "ARCHITECTURE.md does not describe `{member}/`");
    }
}

#[test]
fn no_unexplained_ignores_or_todos() {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    assert!(files.len() > 10, "the walk found the sources");
    let (ignore, todo) = (concat!("#[", "ignore]"), concat!("TO", "DO"));
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.display(), number + 1);
            assert!(!line.contains(ignore), "{at}: give the reason: #[ignore = \"why\"]");
            if let Some(index) = line.find(todo) {
                assert!(line[index..].starts_with(&format!("{todo}(#")), "{at}: a {todo} names its issue: {todo}(#N)");
            }
        }
    }
}
