//! The book (`book/`) stays whole and its examples stay tested.
//!
//! The examples themselves run as doctests of this crate: `src/lib.rs`
//! includes `book/doctests.rs` under `#[cfg(doctest)]`, which puts every
//! chapter in a doc comment, so `cargo test -p addrspace --doc` compiles
//! and runs each ```` ```rust ```` block. This test checks what rustdoc
//! cannot:
//!
//! - the hook is in `src/lib.rs`, and `book/doctests.rs` includes every
//!   chapter, so no chapter's examples escape testing;
//! - `SUMMARY.md` lists every chapter and only existing ones;
//! - every code block names its language (rustdoc runs a bare ```` ``` ````
//!   block as Rust) and every Rust block that is not run says why;
//! - every link between chapters points at an existing chapter and, with
//!   `#anchor`, at an existing heading (mdBook's heading ids).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `book/src/*.md` but `SUMMARY.md`, by file name, sorted.
fn chapters() -> Vec<String> {
    let dir = root().join("book/src");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "SUMMARY.md")
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no chapters in {}", dir.display());
    names
}

fn chapter(name: &str) -> String {
    read(&root().join("book/src").join(name))
}

/// The code fences of a Markdown text: (line number, info string, body).
fn code_blocks(text: &str) -> Vec<(usize, String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((i + 1, info.trim().to_owned(), indent, String::new()));
                }
            }
            Some((start, info, _, body)) => {
                if trimmed.starts_with("```") && trimmed.trim_end() == "```" {
                    blocks.push((*start, info.clone(), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "unclosed code block");
    blocks
}

/// mdBook's id for a heading: lower case, letters, digits, `-` and `_`
/// kept, white space made `-`, everything else dropped.
fn heading_id(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The heading ids of a chapter (headings inside code blocks excluded).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                ids.insert(heading_id(heading));
            }
        }
    }
    ids
}

/// Targets of inline links `](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans, where `](` may appear as code.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn lib_rs_runs_the_book_examples_as_doctests() {
    let lib = read(&root().join("src/lib.rs"));
    assert!(
        lib.contains("#[path = \"../book/doctests.rs\"]") && lib.contains("mod book_doctests;"),
        "src/lib.rs must include the book's examples as doctests:\n\n\
         #[cfg(doctest)]\n#[path = \"../book/doctests.rs\"]\nmod book_doctests;\n"
    );
}

#[test]
fn doctests_rs_includes_every_chapter() {
    let hook = read(&root().join("book/doctests.rs"));
    let missing: Vec<String> = chapters()
        .into_iter()
        .filter(|c| !hook.contains(&format!("include_str!(\"src/{c}\")")))
        .collect();
    assert!(
        missing.is_empty(),
        "book/doctests.rs does not include {missing:?}"
    );
}

#[test]
fn summary_lists_exactly_the_chapters() {
    let summary = read(&root().join("book/src/SUMMARY.md"));
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    let present: BTreeSet<String> = chapters().into_iter().collect();
    assert_eq!(listed, present, "SUMMARY.md and book/src/ disagree");
}

#[test]
fn every_code_block_names_its_language_and_ignored_rust_says_why() {
    let mut problems = Vec::new();
    for name in chapters() {
        for (line, info, body) in code_blocks(&chapter(&name)) {
            if info.is_empty() {
                problems.push(format!(
                    "{name}:{line}: a code block without a language runs as Rust"
                ));
            }
            let rust = info.split(',').next() == Some("rust");
            let not_run = info
                .split(',')
                .any(|t| matches!(t, "ignore" | "no_run" | "compile_fail"));
            if rust && not_run && !body.trim_start().starts_with("//") {
                problems.push(format!(
                    "{name}:{line}: a Rust block that is not run must open with a comment saying why"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn links_between_chapters_resolve() {
    let chapters = chapters();
    let mut problems = Vec::new();
    for name in &chapters {
        let text = chapter(name);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (if f.is_empty() { name.as_str() } else { f }, Some(a)),
                None => (target.as_str(), None),
            };
            if !chapters.iter().any(|c| c == file) {
                problems.push(format!("{name}: link to missing chapter {target}"));
                continue;
            }
            if let Some(anchor) = anchor {
                if !anchors(&chapter(file)).contains(anchor) {
                    problems.push(format!("{name}: link to missing heading {target}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn heading_ids_follow_mdbook() {
    assert_eq!(
        heading_id(" `addrspace mtree flat`"),
        "addrspace-mtree-flat"
    );
    assert_eq!(
        heading_id(" Address spaces, flat views and sharing"),
        "address-spaces-flat-views-and-sharing"
    );
    assert_eq!(
        heading_id(" Usage counters, `vfio_start` / `vfio_stop`, and the two teardown modes"),
        "usage-counters-vfio_start--vfio_stop-and-the-two-teardown-modes"
    );
}
