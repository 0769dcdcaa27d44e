//! The `addrspace mtree` commands, run as a user would run them, on a
//! QEMU conformance case.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use addrspace::mtree::compare_flat;

fn case(ext: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/conformance/qemu-7.2/x86_64-q35-S")
        .with_extension(ext)
}

fn addrspace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_addrspace"))
        .args(args)
        .output()
        .expect("the addrspace binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn mtree_flat_matches_qemus_flat_views() {
    let (tree, flat) = (case("tree"), case("flat"));
    let out = addrspace(&[
        "mtree",
        "flat",
        tree.to_str().unwrap(),
        "--hints",
        flat.to_str().unwrap(),
        "--readonly-alias",
        "pam-rom",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(&flat).unwrap();
    let cmp = compare_flat(&expected, &text(&out.stdout));
    assert!(cmp.is_match(), "{cmp}");
}

#[test]
fn mtree_tree_prints_the_dump_back() {
    let tree = case("tree");
    let out = addrspace(&["mtree", "tree", tree.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), std::fs::read_to_string(&tree).unwrap());
}

#[test]
fn bad_input_exits_2_with_file_and_line() {
    let dir = tempfile::Builder::new()
        .prefix("addrspace-cli-")
        .tempdir()
        .unwrap();
    let bad = dir.path().join("bad.tree");
    std::fs::write(
        &bad,
        "address-space: memory\n  00000000000000zz-ffffffffffffffff (prio 0, i/o): system\n",
    )
    .unwrap();
    let out = addrspace(&["mtree", "flat", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}:2: bad address", bad.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_file_exits_2() {
    let out = addrspace(&["mtree", "tree", "/nonexistent/dump.tree"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: cannot read /nonexistent/dump.tree"));
}
