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
    /// The names among them whose value may end up in the output: every `env!`/`option_env!` except
    /// one that only builds an include path (`include!(concat!(env!("OUT_DIR"), "/gen.rs"))`).
    pub env_values: BTreeSet<String>,
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
        for index in memchr::memmem::find_iter(text.as_bytes(), macro_name) {
            let Some(literal) = leading_literal(&text[index + macro_name.len()..]) else { continue };
            if !builds_include_path(&text[..index]) {
                found.env_values.insert(literal.to_owned());
            }
        }
    }
}

/// Whether the text before an `env!(` ends with an include macro applied to `concat!(`, the only
/// place where the variable's value is a path rustc reads rather than a value it compiles in.
fn builds_include_path(before: &str) -> bool {
    let squeezed: String = before.chars().rev().filter(|c| !c.is_whitespace()).take(40).collect();
    let squeezed: String = squeezed.chars().rev().collect();
    ["include!(concat!(", "include_str!(concat!(", "include_bytes!(concat!("]
        .iter()
        .any(|prefix| squeezed.ends_with(prefix))
}

/// The string literals right after each `marker` (skipping spaces); anything else after a marker, such
/// as `concat!(…)`, is not a literal path and is skipped. memchr's SIMD search, not `str::find`: the
/// scan reads every source of every crate, and with `str::find` it was a tenth of the model's time.
fn literals_after<'t>(text: &'t str, marker: &str) -> Vec<&'t str> {
    // A marker is ASCII, so a match ends on a character boundary.
    memchr::memmem::find_iter(text.as_bytes(), marker)
        .filter_map(|index| leading_literal(&text[index + marker.len()..]))
        .collect()
}

/// The plain string literal `text` starts with (after spaces), if any.
fn leading_literal(text: &str) -> Option<&str> {
    let body = text.trim_start().strip_prefix('"')?;
    let literal = &body[..body.find('"')?];
    (!literal.contains('\\') && !literal.is_empty()).then_some(literal)
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
        assert_eq!(found.env.iter().collect::<Vec<_>>(), ["GIT_HASH", "OUT_DIR"]);
        assert_eq!(found.env_values.iter().collect::<Vec<_>>(), ["GIT_HASH"], "OUT_DIR only names a file");
    }

    #[test]
    fn a_path_compiled_in_is_a_value_read() {
        let mut found = Found::default();
        let text = r#"
            pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
            static TABLE: &str = include_str!(concat!( env!("OUT_DIR"), "/table.txt"));
            const OUT: &str = concat!(env!("OUT_DIR"), "/x");
        "#;
        scan(Path::new("/w/app/src/lib.rs"), text, &mut found);
        assert_eq!(found.env_values.iter().collect::<Vec<_>>(), ["CARGO_MANIFEST_DIR", "OUT_DIR"]);
    }
}
