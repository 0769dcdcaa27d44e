//! The `addrspace` command run as a user runs it: diff, replay of every
//! example script, map, JSON output, help texts, and errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dump(name: &str, ext: &str) -> String {
    root()
        .join("tests/data/conformance/qemu-7.2")
        .join(format!("{name}.{ext}"))
        .to_str()
        .unwrap()
        .to_owned()
}

fn addrspace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_addrspace"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .output()
        .expect("the addrspace binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

fn ok(args: &[&str]) -> String {
    let out = addrspace(args);
    assert!(
        out.status.success(),
        "addrspace {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// A file in a directory of its own, both removed when this is dropped.
struct TempFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

fn temp(name: &str, contents: &str) -> TempFile {
    let dir = tempfile::Builder::new()
        .prefix("addrspace-cli-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    TempFile { path, _dir: dir }
}

/// A user mistake: exit status 2, `error: ...` naming `needle`, no panic.
fn user_error(args: &[&str], needle: &str) {
    let out = addrspace(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_dump_against_itself_makes_no_events() {
    let q35 = dump("x86_64-q35-S", "tree");
    let out = ok(&["mtree", "diff", &q35, &q35]);
    assert!(out.contains(", 0 changed"), "{out}");
    assert!(
        !out.contains("region_del") && !out.contains("region_add"),
        "{out}"
    );
}

#[test]
fn booting_q35_adds_and_removes_ranges_of_memory() {
    let (a, b) = (
        dump("x86_64-q35-S", "tree"),
        dump("x86_64-q35-booted", "tree"),
    );
    let (ha, hb) = (
        dump("x86_64-q35-S", "flat"),
        dump("x86_64-q35-booted", "flat"),
    );
    let out = ok(&[
        "mtree",
        "diff",
        &a,
        &b,
        "--hints-a",
        &ha,
        "--hints-b",
        &hb,
        "--as",
        "memory",
    ]);
    // The firmware's BARs and chipset windows appear once the guest runs.
    assert!(
        out.contains("  region_add 00000000febff000-00000000febfffff \"ahci\" (mmio) @0x0\n"),
        "{out}"
    );
    assert!(out.contains("region_del 0000000000000000-00000000000bffff \"pc.ram\" (ram) @0x0 via alias \"ram-below-4g\""), "{out}");
    let dels = out.find("region_del").unwrap();
    let adds = out.find("region_add").unwrap();
    assert!(dels < adds, "deletions come first: {out}");

    let v = json(&[
        "mtree",
        "diff",
        &a,
        &b,
        "--hints-a",
        &ha,
        "--hints-b",
        &hb,
        "--json",
    ]);
    let spaces = v["address_spaces"].as_array().unwrap();
    let memory = spaces.iter().find(|s| s["name"] == "memory").unwrap();
    assert_eq!(memory["presence"], "both");
    let added: Vec<&str> = memory["region_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert!(added.contains(&"ahci"), "{added:?}");
    // The booted machine has bus-master address spaces the -S one lacks
    // or has in other numbers; every one is accounted for.
    let a_spaces = spaces.iter().filter(|s| s["presence"] != "only_b").count();
    let b_spaces = spaces.iter().filter(|s| s["presence"] != "only_a").count();
    let count = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("address-space: "))
            .count()
    };
    assert_eq!(a_spaces, count(&a));
    assert_eq!(b_spaces, count(&b));
}

#[test]
fn diff_of_an_unknown_address_space_is_a_user_error() {
    let q35 = dump("x86_64-q35-S", "tree");
    user_error(
        &["mtree", "diff", &q35, &q35, "--as", "nowhere"],
        "no address space named \"nowhere\"",
    );
}

/// How each example script is run (scripts without `machine pseries` need
/// a tree).
fn example_args(name: &str) -> Vec<String> {
    match name {
        "pci-bar-toggle.replay" => vec![
            "--tree".into(),
            dump("x86_64-q35-booted", "tree"),
            "--hints".into(),
            dump("x86_64-q35-booted", "flat"),
        ],
        _ => Vec::new(),
    }
}

#[test]
fn every_example_script_runs_and_its_expectations_hold() {
    let mut ran = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "replay") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let script = std::fs::read_to_string(&path).unwrap();
        assert!(
            script.contains("\nexpect "),
            "{name} checks nothing; examples must be self-checking"
        );
        let mut args = vec!["replay".to_owned(), path.to_str().unwrap().to_owned()];
        args.extend(example_args(&name));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&args);
        assert!(out.trim_end().ends_with("listener events"), "{name}: {out}");
        let v = json(&[args.as_slice(), &["--json"]].concat());
        assert!(!v["steps"].as_array().unwrap().is_empty(), "{name}");
        ran += 1;
    }
    assert!(ran >= 3, "only {ran} example scripts");
}

#[test]
fn replay_prints_what_listeners_hear() {
    let out = ok(&["replay", "examples/ddw.replay"]);
    assert!(
        out.contains(
            "region_del  0800000000000000-080000003fffffff \"tce-iommu-80000001\" (iommu) @0x0"
        ),
        "{out}"
    );
    let v = json(&["replay", "examples/ddw.replay", "--json"]);
    let events: Vec<&serde_json::Value> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["events"].as_array().unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    // Plugging the device opened a container on the simulated host.
    let plug = &v["steps"][0];
    assert_eq!(plug["command"], "plug spapr 1 phb=0");
    assert_eq!(plug["ioctls"]["OpenContainer"], 1, "{plug}");
    assert_eq!(events[0]["event"], "region_add");
    assert_eq!(events[0]["range"]["kind"], "iommu");
    assert_eq!(events[0]["range"]["start"], "0x800000000000000");
}

#[test]
fn replay_can_show_one_address_space() {
    let booted = dump("x86_64-q35-booted", "tree");
    let all = ok(&[
        "replay",
        "examples/pci-bar-toggle.replay",
        "--tree",
        &booted,
    ]);
    let one = ok(&[
        "replay",
        "examples/pci-bar-toggle.replay",
        "--tree",
        &booted,
        "--as",
        "memory",
    ]);
    let events = |out: &str, space: &str| {
        out.lines()
            .filter(|l| l.trim_start().starts_with(space) && l.contains(" region_"))
            .count()
    };
    assert!(events(&all, "ich9-ahci") > 0, "{all}");
    assert_eq!(events(&one, "ich9-ahci"), 0, "{one}");
    assert_eq!(events(&one, "memory "), events(&all, "memory "));
    user_error(
        &[
            "replay",
            "examples/pci-bar-toggle.replay",
            "--tree",
            &booted,
            "--as",
            "nowhere",
        ],
        "--as \"nowhere\": the machine has no address space",
    );
}

#[test]
fn a_failed_expectation_exits_1_naming_the_line() {
    let script = temp(
        "wrong.replay",
        "machine pseries\nplug spapr 1\nput-tce page=0 target=past-ram\nexpect said H_SUCCESS\n",
    );
    let out = addrspace(&["replay", script.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wrong.replay:4: expectation failed: expected \"H_SUCCESS\""),
        "{stderr}"
    );
}

#[test]
fn bad_scripts_are_user_errors_naming_file_and_line() {
    let bad = temp("bad.replay", "machine pseries\n\nmove\n");
    user_error(
        &["replay", bad.to_str().unwrap()],
        "bad.replay:3: `move` takes 2 argument(s), got 0",
    );
    let unknown = temp("unknown.replay", "disable no-such-region\n");
    let q35 = dump("x86_64-q35-S", "tree");
    user_error(
        &["replay", unknown.to_str().unwrap(), "--tree", &q35],
        "unknown.replay:1: no region named \"no-such-region\"",
    );
    user_error(
        &["replay", unknown.to_str().unwrap()],
        "no tree given (--tree DUMP)",
    );
    let guest = temp("guest.replay", "reset\n");
    user_error(
        &["replay", guest.to_str().unwrap(), "--tree", &q35],
        "guest.replay:1: guest actions need the pseries model",
    );
    user_error(
        &["replay", "/nonexistent/x.replay"],
        "cannot read /nonexistent/x.replay",
    );
}

#[test]
fn a_refusal_not_marked_fail_stops_the_replay_with_status_1() {
    let script = temp("refused.replay", "fail enable ahci\n");
    let q35 = dump("x86_64-q35-booted", "tree");
    let out = addrspace(&["replay", script.to_str().unwrap(), "--tree", &q35]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refused.replay:1: expected a refusal"));
}

#[test]
fn the_map_of_q35_memory_is_an_svg_with_every_range() {
    let svg = ok(&[
        "map",
        &dump("x86_64-q35-S", "tree"),
        "--hints",
        &dump("x86_64-q35-S", "flat"),
        "--svg",
        "-",
    ]);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").to_owned())
        .collect();
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    // Every range of the flat view, by address and by name.
    let flat = json(&[
        "mtree",
        "flat",
        &dump("x86_64-q35-S", "tree"),
        "--hints",
        &dump("x86_64-q35-S", "flat"),
        "--json",
    ]);
    let memory = flat["address_spaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "memory")
        .unwrap();
    let ranges = memory["ranges"].as_array().unwrap();
    assert!(ranges.len() >= 8, "{ranges:?}");
    for r in ranges {
        let start =
            u64::from_str_radix(r["start"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let last =
            u64::from_str_radix(r["last"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert!(has(&format!("{start:016x}-{last:016x}")), "{r}");
        assert!(has(r["region"].as_str().unwrap()), "{r}");
        if let Some(alias) = r["via_alias"].as_str() {
            assert!(has(&format!("via alias \"{alias}\"")), "{r}");
        }
    }
    // The hole above 4 GiB is drawn as such.
    assert!(has("unassigned"), "{texts:?}");
}

#[test]
fn map_of_an_unknown_address_space_lists_the_known_ones() {
    user_error(
        &[
            "map",
            &dump("x86_64-q35-S", "tree"),
            "--as",
            "nowhere",
            "--svg",
            "-",
        ],
        "no address space named \"nowhere\" (it has: ",
    );
}

#[test]
fn bench_toggle_json_matches_its_text_line() {
    let q35 = dump("x86_64-q35-S", "tree");
    let args = [
        "bench", "toggle", &q35, "--region", "pc.rom", "--count", "20",
    ];
    let text = ok(&args);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("mean_commit_ns="), "{text}");
    assert!(last.contains(" commits=20 "), "{text}");
    let v = json(&[args.as_slice(), &["--json"]].concat());
    assert_eq!(v["commits"], 20);
    assert_eq!(v["region"], "pc.rom");
}

#[test]
fn bench_toggle_compare_runs_both_engines_on_one_machine() {
    let q35 = dump("x86_64-q35-S", "tree");
    let args = [
        "bench",
        "toggle",
        &q35,
        "--region",
        "pc.rom",
        "--count",
        "20",
        "--compare",
    ];
    let out = ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("20 times with each engine, in 10 alternating rounds"),
        "{out}"
    );
    for (line, engine) in lines[1..].iter().zip(["reference", "incremental"]) {
        assert!(line.starts_with("mean_commit_ns="), "{out}");
        assert!(line.contains(" commits=20 "), "{out}");
        assert!(line.ends_with(&format!(" engine={engine}")), "{out}");
    }
    let v = json(&[args.as_slice(), &["--json"]].concat());
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    assert_eq!(engines[0]["engine"], "reference");
    assert_eq!(engines[1]["engine"], "incremental");
    let mut rounds: Vec<f64> = v["round_speedups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    assert_eq!(rounds.len(), 10);
    assert_eq!(v["rounds"], 10);
    rounds.sort_by(f64::total_cmp);
    assert_eq!(
        v["speedup_median"].as_f64().unwrap(),
        (rounds[4] + rounds[5]) / 2.0,
        "{v}"
    );
    // Every toggle was heard, under both engines: a timed pair (removed,
    // added back) and a warm-up pair in each of the 20 blocks. A pair's
    // events and the registration's come from two single-engine runs,
    // each with its one warm-up pair.
    let events = |count: &str| {
        json(&[
            "bench", "toggle", &q35, "--region", "pc.rom", "--count", count, "--json",
        ])["events"]
            .as_u64()
            .unwrap()
    };
    let (two, four) = (events("2"), events("4"));
    let pair = four - two;
    assert!(pair > 0);
    let registration = two - 2 * pair;
    assert_eq!(
        v["events"].as_u64().unwrap(),
        registration + 40 * pair,
        "{v}"
    );
    let clash = addrspace(&[args.as_slice(), &["--engine", "reference"]].concat());
    assert_eq!(clash.status.code(), Some(2));
    assert!(text(&clash.stderr).contains("cannot be used with"));
}

#[test]
fn every_subcommand_has_examples_in_its_help() {
    for cmd in [
        &["--help"][..],
        &["demo", "--help"],
        &["mtree", "flat", "--help"],
        &["mtree", "tree", "--help"],
        &["mtree", "diff", "--help"],
        &["replay", "--help"],
        &["map", "--help"],
        &["bench", "toggle", "--help"],
        &["bench", "scale", "--help"],
    ] {
        let help = ok(cmd);
        assert!(help.contains("EXAMPLES:"), "{cmd:?}: {help}");
    }
    assert!(ok(&["replay", "--help"]).contains("SCRIPT FORMAT:"));
}

#[test]
fn verbose_turns_on_tracing_and_rust_log_wins() {
    let args = ["replay", "examples/ddw.replay"];
    let quiet = addrspace(&args);
    let loud = addrspace(&[&["-vvv"][..], &args].concat());
    assert!(quiet.status.success() && loud.status.success());
    assert!(text(&quiet.stderr).is_empty(), "{}", text(&quiet.stderr));
    let stderr = text(&loud.stderr);
    assert!(
        stderr.contains("TRACE") && stderr.contains("region_add"),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "no colours into a pipe");
    let filtered = Command::new(env!("CARGO_BIN_EXE_addrspace"))
        .args(["-vvv", "replay", "examples/ddw.replay"])
        .current_dir(root())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(text(&filtered.stderr).is_empty());
}
