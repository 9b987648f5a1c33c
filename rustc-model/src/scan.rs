//! A cheap look at a package's Rust sources for what rustc will read beyond them: files named by
//! `include_str!`, `include_bytes!`, `include!` and `#[path = "…"]` with a literal path (possibly outside
//! the package: `include_str!("../README.md")` is common in workspaces), and variables named by
//! `env!`/`option_env!`, which the thunk must carry when they are set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a source file refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Files, resolved against the directory of the source that names them.
    pub files: BTreeSet<PathBuf>,
    /// Environment variable names.
    pub env: BTreeSet<String>,
}

/// Scans the text of the source file at `path`.
pub fn scan(path: &Path, text: &str, found: &mut Found) {
    let dir = path.parent().unwrap_or(Path::new("/"));
    for macro_name in ["include_str!(", "include_bytes!(", "include!("] {
        for literal in literals_after(text, macro_name) {
            found.files.insert(dir.join(literal));
        }
    }
    for literal in literals_after(text, "#[path = ") {
        found.files.insert(dir.join(literal));
    }
    for macro_name in ["env!(", "option_env!("] {
        for literal in literals_after(text, macro_name) {
            found.env.insert(literal.to_owned());
        }
    }
}

/// The string literals right after each `marker` (skipping spaces); anything else after a marker, such
/// as `concat!(…)`, is not a literal path and is skipped.
fn literals_after<'t>(text: &'t str, marker: &str) -> Vec<&'t str> {
    let mut literals = Vec::new();
    let mut rest = text;
    while let Some(index) = rest.find(marker) {
        rest = &rest[index + marker.len()..];
        let trimmed = rest.trim_start();
        if let Some(body) = trimmed.strip_prefix('"')
            && let Some(end) = body.find('"')
        {
            let literal = &body[..end];
            if !literal.contains('\\') && !literal.is_empty() {
                literals.push(literal);
            }
        }
    }
    literals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literal_includes_and_env_names() {
        let mut found = Found::default();
        let text = r#"
            #![doc = include_str!("../README.md")]
            static DATA: &[u8] = include_bytes!( "data/blob.bin" );
            include!(concat!(env!("OUT_DIR"), "/gen.rs"));
            #[path = "platform/linux.rs"] mod platform;
            const V: Option<&str> = option_env!("GIT_HASH");
        "#;
        scan(Path::new("/w/app/src/lib.rs"), text, &mut found);
        let files: Vec<_> = found.files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(files, ["/w/app/src/../README.md", "/w/app/src/data/blob.bin", "/w/app/src/platform/linux.rs"]);
        assert_eq!(found.env.into_iter().collect::<Vec<_>>(), ["GIT_HASH", "OUT_DIR"]);
    }
}
