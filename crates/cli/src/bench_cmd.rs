//! `addrspace bench`: commit cost on real QEMU topologies and at synthetic
//! VM scale, lookups, and memory use.

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use addrspace::bench::{
    count_events, mean_median_ns, median, toggle, ScaleMachine, BAR_BASE, BAR_SIZE,
};
use addrspace::mtree::{build, parse};
use addrspace::{Engine, ViewReader};
use clap::Subcommand;
use serde::Serialize;

use crate::error::CliError;
use crate::mtree_cmd::{load_hints, read};
use crate::plot::{loglog, Panel, Series};

/// The `bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Toggle one region of a QEMU dump in and out, one commit each, and
    /// time the commits.
    ///
    /// The first region named NAME (in the dump's print order) is removed
    /// from its parent and added back at the same address and priority,
    /// alternately. A counting listener sits on the address space
    /// `memory` (on every address space with --listen-all). The last line
    /// is machine-readable:
    /// `mean_commit_ns=.. median_commit_ns=.. commits=.. address_spaces=..
    /// flat_ranges=.. engine=..` (flat_ranges: ranges of all distinct
    /// views).
    ///
    /// With --compare, both engines toggle the same machine in up to 100
    /// short alternating rounds, COUNT commits each in all, and the
    /// speed-up is the median of the rounds' own: a host whose speed
    /// changes during the run then meets both engines alike. A line with
    /// it comes before a machine-readable line per engine, reference
    /// first.
    #[command(after_help = "EXAMPLES:
  addrspace bench toggle tests/data/conformance/qemu-7.2/x86_64-q35-e1000x200.tree \\
      --hints tests/data/conformance/qemu-7.2/x86_64-q35-e1000x200.flat --region e1000-mmio
  addrspace bench toggle tests/data/conformance/qemu-7.2/x86_64-q35-e1000x200.tree \\
      --hints tests/data/conformance/qemu-7.2/x86_64-q35-e1000x200.flat --region e1000-mmio --compare
  addrspace bench toggle tests/data/conformance/qemu-7.2/x86_64-q35-S.tree --region pc.rom \\
      --engine reference --count 200 --json")]
    Toggle {
        /// The `info mtree -D` text.
        tree: PathBuf,
        /// Name of the region to toggle.
        #[arg(long, value_name = "NAME")]
        region: String,
        /// The matching `info mtree -f` text (see `mtree flat --hints`).
        #[arg(long, value_name = "FLAT")]
        hints: Option<PathBuf>,
        /// Alias names that are read-only (repeatable).
        #[arg(long = "readonly-alias", value_name = "NAME")]
        readonly_aliases: Vec<String>,
        /// Number of commits.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// `incremental` or `reference`.
        #[arg(long, default_value = "incremental", conflicts_with = "compare")]
        engine: Engine,
        /// Run both engines in alternating rounds and print the speed-up.
        #[arg(long)]
        compare: bool,
        /// Listen on every address space, not only `memory`.
        #[arg(long)]
        listen_all: bool,
        /// Print one JSON document instead of the two lines.
        #[arg(long)]
        json: bool,
    },
    /// Synthetic machines at VM scale: commit cost against region and
    /// address-space counts for both engines, lookups, memory.
    #[command(after_help = "EXAMPLES:
  cargo run --release -p addrspace-cli -- bench scale
  addrspace bench scale --quick --json
  # The plot of the book's performance chapter:
  cargo run --release -p addrspace-cli -- bench scale --svg book/src/images/bench-scale.svg")]
    Scale {
        /// Fewer commits per row (for smoke tests).
        #[arg(long)]
        quick: bool,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Also draw commit time against region and address-space counts,
        /// both engines, as an SVG chart.
        #[arg(long, value_name = "OUT")]
        svg: Option<PathBuf>,
    },
}

impl BenchCommand {
    /// Runs the benchmark, writing to `out`.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            BenchCommand::Toggle {
                tree,
                region,
                hints: flat,
                readonly_aliases,
                count,
                engine,
                compare,
                listen_all,
                json,
            } => {
                let h = load_hints(flat.as_deref(), readonly_aliases)?;
                let dump = parse(&read(&tree)?).map_err(|e| CliError::parse(&tree, e))?;
                let mut built = build(&dump, &h).map_err(|source| CliError::Build {
                    path: tree.clone(),
                    source: Box::new(source),
                })?;
                let target = dump
                    .nodes()
                    .find(|n| n.name == region)
                    .and_then(|n| built.region_of(n))
                    .ok_or_else(|| CliError::NoSuchRegion {
                        path: tree.clone(),
                        name: region.clone(),
                    })?;
                let spaces: Vec<_> = if listen_all {
                    built.space_ids()
                } else {
                    built.address_space("memory").into_iter().collect()
                };
                let all = built.space_ids();
                let mem = built.memory_mut();
                let counter = count_events(mem, &spaces)?;
                let engines: &[Engine] = if compare {
                    &[Engine::Reference, Engine::Incremental]
                } else {
                    std::slice::from_ref(&engine)
                };
                let rounds = toggle_engines(mem, target, engines, count)?;
                let times: Vec<Vec<Duration>> = rounds
                    .iter()
                    .map(|r| r.iter().flatten().copied().collect())
                    .collect();
                let mut roots: Vec<_> = all.iter().filter_map(|a| mem.view(*a).ok()).collect();
                roots.sort_by_key(|v| std::sync::Arc::as_ptr(v) as usize);
                roots.dedup_by_key(|v| std::sync::Arc::as_ptr(v) as usize);
                let ranges: usize = roots.iter().map(|v| v.ranges.len()).sum();
                let stats: Vec<(Engine, f64, f64)> = engines
                    .iter()
                    .zip(&times)
                    .map(|(e, t)| {
                        let (mean, median) = mean_median_ns(t);
                        (*e, mean, median)
                    })
                    .collect();
                let speedups = compare.then(|| round_speedups(&rounds[0], &rounds[1]));
                let speedup = speedups.clone().map(|mut r| median(&mut r));
                if json {
                    let line = |&(e, mean, median): &(Engine, f64, f64)| {
                        serde_json::json!({
                            "region": region,
                            "commits": count,
                            "events": counter.get(),
                            "mean_commit_ns": mean,
                            "median_commit_ns": median,
                            "address_spaces": all.len(),
                            "flat_ranges": ranges,
                            "engine": e.name(),
                        })
                    };
                    let doc = match speedup {
                        Some(x) => serde_json::json!({
                            "region": region,
                            "commits_per_engine": count,
                            "events": counter.get(),
                            "rounds": rounds[0].len(),
                            "speedup_median": x,
                            "round_speedups": speedups,
                            "engines": stats.iter().map(line).collect::<Vec<_>>(),
                        }),
                        None => line(&stats[0]),
                    };
                    return crate::json::emit(out, &doc);
                }
                let w =
                    |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Write);
                match speedup {
                    Some(x) => w(
                        out,
                        format!(
                            "toggled {region:?} {count} times with each engine, in {} alternating rounds; listeners heard {} events; incremental {x:.1}x faster (median of the rounds' median ratios)",
                            rounds[0].len(),
                            counter.get()
                        ),
                    )?,
                    None => w(
                        out,
                        format!(
                            "toggled {region:?} {count} times; listeners heard {} events",
                            counter.get()
                        ),
                    )?,
                }
                for (e, mean, median) in &stats {
                    w(
                        out,
                        format!(
                            "mean_commit_ns={mean:.1} median_commit_ns={median:.1} commits={count} address_spaces={} flat_ranges={ranges} engine={}",
                            all.len(),
                            e.name()
                        ),
                    )?;
                }
                Ok(())
            }
            BenchCommand::Scale { quick, json, svg } => {
                let r = measure(quick)?;
                if let Some(path) = svg {
                    std::fs::write(&path, plot(&r, quick)).map_err(|e| {
                        CliError::Write(std::io::Error::new(
                            e.kind(),
                            format!("{}: {e}", path.display()),
                        ))
                    })?;
                }
                if json {
                    crate::json::emit(out, &r)
                } else {
                    print_scale(out, &r)
                }
            }
        }
    }
}

/// Most rounds of a `bench toggle --compare` run.
const ROUNDS: usize = 100;

/// Toggles `target` `count` times with each of `engines` and returns each
/// engine's commit times, round by round. One engine runs its commits in
/// one round; several alternate in up to [`ROUNDS`] rounds of at least two
/// commits each. A round is short (about 3 ms on the 200-device q35 dump),
/// so the host rarely changes speed inside one, and comparing the engines
/// round by round compares them at the same speed: the reference engine
/// takes almost all of the wall time, so over a whole run it meets most of
/// the host's changes and the incremental engine few of them. The first
/// commit after switching engines renders everything and is left out: an
/// untimed warm-up toggle precedes every timed block.
fn toggle_engines(
    mem: &mut addrspace::Memory,
    target: addrspace::RegionId,
    engines: &[Engine],
    count: usize,
) -> Result<Vec<Vec<Vec<Duration>>>, CliError> {
    let rounds = if engines.len() > 1 {
        ROUNDS.min(count / 2).max(1)
    } else {
        1
    };
    let total = (count * engines.len()) as u64;
    let bar = crate::progress::bar(total, "toggle");
    let mut times: Vec<Vec<Vec<Duration>>> = engines.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Round `round` takes its share of `count`; the shares sum to it.
        let share = count * (round + 1) / rounds - count * round / rounds;
        for (e, t) in engines.iter().zip(times.iter_mut()) {
            mem.set_engine(*e);
            toggle(mem, target, 2)?;
            let mut block = Vec::with_capacity(share);
            // In even chunks, each leaving the region in place, so the bar
            // moves.
            while block.len() < share {
                let n = (share - block.len()).min(256);
                block.extend(toggle(mem, target, n)?);
                bar.inc(n as u64);
            }
            t.push(block);
        }
    }
    bar.finish_and_clear();
    Ok(times)
}

/// Each round's median `slow` commit over its median `fast` one.
fn round_speedups(slow: &[Vec<Duration>], fast: &[Vec<Duration>]) -> Vec<f64> {
    slow.iter()
        .zip(fast)
        .map(|(s, f)| mean_median_ns(s).1 / mean_median_ns(f).1.max(1.0))
        .collect()
}

/// One row of `bench scale`: median one-region commit of each engine.
#[derive(Debug, Serialize)]
struct ScaleRow {
    regions: usize,
    spaces: usize,
    incremental_ns: f64,
    reference_ns: f64,
}

/// Everything `bench scale` measures.
#[derive(Debug, Serialize)]
struct ScaleResults {
    commits: usize,
    rows: Vec<ScaleRow>,
    ratio_100k_1k_regions: f64,
    ratio_1000_1_spaces: f64,
    lookup_ranges: usize,
    lookup_random_ns: f64,
    lookup_repeated_ns: f64,
    bytes_per_flat_range: f64,
    bytes_per_address_space: f64,
}

/// The machines measured: (regions, address spaces).
const SHAPES: [(usize, usize); 5] = [
    (1_000, 1),
    (10_000, 1),
    (100_000, 1),
    (10_000, 100),
    (10_000, 1_000),
];

fn measure(quick: bool) -> Result<ScaleResults, CliError> {
    let commits = if quick { 50 } else { 2000 };
    let mut rows = Vec::new();
    let bar = crate::progress::bar(SHAPES.len() as u64 + 2, "bench scale");
    for (regions, spaces) in SHAPES {
        let mut medians = [0.0; 2];
        for (k, engine) in [Engine::Incremental, Engine::Reference]
            .into_iter()
            .enumerate()
        {
            let mut m = ScaleMachine::new(regions, spaces)?;
            m.mem.set_engine(engine);
            count_events(&mut m.mem, &[m.memory])?;
            let bar = m.bars[m.bars.len() / 2];
            // The reference engine renders everything: fewer commits.
            let n = if engine == Engine::Reference {
                (commits / 20).max(10)
            } else {
                commits
            };
            medians[k] = mean_median_ns(&toggle(&mut m.mem, bar, n)?).1;
        }
        bar.inc(1);
        rows.push(ScaleRow {
            regions,
            spaces,
            incremental_ns: medians[0],
            reference_ns: medians[1],
        });
    }
    let at = |r: usize, s: usize| {
        rows.iter()
            .find(|x| x.regions == r && x.spaces == s)
            .map_or(f64::NAN, |x| x.incremental_ns)
    };
    let ratio_regions = at(100_000, 1) / at(1_000, 1);
    let ratio_spaces = at(10_000, 1_000) / at(10_000, 1);

    // Lookups over 10k ranges.
    let m = ScaleMachine::new(10_000, 1)?;
    let view = m.mem.view(m.memory)?;
    let n = if quick { 100_000 } else { 10_000_000 };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let addrs: Vec<u64> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BAR_BASE + x % (10_000 * 2 * BAR_SIZE)
        })
        .collect();
    let t = Instant::now();
    let mut hits = 0usize;
    for i in 0..n {
        hits += black_box(view.lookup(addrs[i & 4095])).is_some() as usize;
    }
    let random = t.elapsed().as_nanos() as f64 / n as f64;
    let mut reader = ViewReader::new(m.mem.view_handle(m.memory)?);
    let hot = BAR_BASE + 0x40;
    let t = Instant::now();
    for i in 0..n {
        hits += black_box(reader.lookup(black_box(hot + (i as u64 & 0xff)))).is_some() as usize;
    }
    let repeated = t.elapsed().as_nanos() as f64 / n as f64;
    black_box(hits);
    let lookup_ranges = view.ranges.len();
    bar.inc(1);

    // Memory, measured by the counting allocator.
    let before = crate::alloc::live_bytes();
    let m = ScaleMachine::new(100_000, 1)?;
    let view = m.mem.view(m.memory)?;
    let per_range = view.heap_bytes() as f64 / view.ranges.len() as f64;
    drop(view);
    let one = crate::alloc::live_bytes() - before;
    drop(m);
    let before = crate::alloc::live_bytes();
    let m = ScaleMachine::new(100_000, 1_001)?;
    let with_spaces = crate::alloc::live_bytes() - before;
    drop(m);
    let per_space = (with_spaces - one) as f64 / 1_000.0;
    bar.finish_and_clear();
    Ok(ScaleResults {
        commits,
        rows,
        ratio_100k_1k_regions: ratio_regions,
        ratio_1000_1_spaces: ratio_spaces,
        lookup_ranges,
        lookup_random_ns: random,
        lookup_repeated_ns: repeated,
        bytes_per_flat_range: per_range,
        bytes_per_address_space: per_space,
    })
}

fn print_scale(out: &mut dyn Write, r: &ScaleResults) -> Result<(), CliError> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Write);
    w(out, "one-region commit (median ns; a BAR toggled in and out; one counting listener on `memory`)".into())?;
    w(
        out,
        format!(
            "{:>8} {:>7} {:>12} {:>12} {:>8}",
            "regions", "spaces", "incremental", "reference", "speedup"
        ),
    )?;
    for row in &r.rows {
        w(
            out,
            format!(
                "{:>8} {:>7} {:>12.0} {:>12.0} {:>7.0}x",
                row.regions,
                row.spaces,
                row.incremental_ns,
                row.reference_ns,
                row.reference_ns / row.incremental_ns
            ),
        )?;
    }
    w(
        out,
        format!(
            "ratio 100k/1k regions: {:.2} (target <= 3)",
            r.ratio_100k_1k_regions
        ),
    )?;
    w(
        out,
        format!(
            "ratio 1000/1 spaces:   {:.2} (target <= 2)",
            r.ratio_1000_1_spaces
        ),
    )?;
    w(out, format!("lookup over {} ranges: random {:.1} ns (target <= 20), repeated hit {:.1} ns (target <= 3)", r.lookup_ranges, r.lookup_random_ns, r.lookup_repeated_ns))?;
    w(out, format!("memory: {:.1} bytes per flat range (target <= 64); {:.0} bytes per address space sharing a view, its bus-master container and alias included (target <= 1024)", r.bytes_per_flat_range, r.bytes_per_address_space))?;
    Ok(())
}

/// The chart of `bench scale --svg`: commit time against regions (one
/// address space) and against address spaces (10k regions).
fn plot(r: &ScaleResults, quick: bool) -> String {
    let series = |pick: &dyn Fn(&ScaleRow) -> Option<f64>, key: &dyn Fn(&ScaleRow) -> f64| {
        let mut inc = Vec::new();
        let mut refr = Vec::new();
        for row in &r.rows {
            if pick(row).is_some() {
                inc.push((key(row), row.incremental_ns));
                refr.push((key(row), row.reference_ns));
            }
        }
        vec![
            Series {
                label: "incremental engine".into(),
                colour: "#1e88e5",
                points: inc,
            },
            Series {
                label: "reference engine (renders everything)".into(),
                colour: "#f4511e",
                points: refr,
            },
        ]
    };
    let panels = [
        Panel {
            title: "one address space".into(),
            x_label: "regions (BARs under one container)".into(),
            y_label: "median commit time".into(),
            series: series(&|row| (row.spaces == 1).then_some(0.0), &|row| {
                row.regions as f64
            }),
        },
        Panel {
            title: "10k regions".into(),
            x_label: "address spaces sharing the view".into(),
            y_label: "median commit time".into(),
            series: series(&|row| (row.regions == 10_000).then_some(0.0), &|row| {
                row.spaces as f64
            }),
        },
    ];
    let note = format!(
        "one BAR toggled in and out, one counting listener on `memory`; {} commits per point (incremental){}",
        r.commits,
        if quick { "; --quick run" } else { "" }
    );
    loglog(
        "addrspace bench scale: one-region commit cost",
        &note,
        &panels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> ScaleResults {
        ScaleResults {
            commits: 50,
            rows: SHAPES
                .iter()
                .enumerate()
                .map(|(i, &(regions, spaces))| ScaleRow {
                    regions,
                    spaces,
                    incremental_ns: 1_000.0 * (i + 1) as f64,
                    reference_ns: 100_000.0 * (i + 1) as f64,
                })
                .collect(),
            ratio_100k_1k_regions: 3.0,
            ratio_1000_1_spaces: 5.0,
            lookup_ranges: 10_000,
            lookup_random_ns: 10.0,
            lookup_repeated_ns: 1.0,
            bytes_per_flat_range: 40.0,
            bytes_per_address_space: 500.0,
        }
    }

    #[test]
    fn the_plot_has_a_point_per_machine_and_engine() {
        let svg = plot(&results(), true);
        // Two panels (regions: 3 machines; spaces: 3 machines sharing
        // 10k regions), two engines each.
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 2 * (3 + 3));
        assert!(svg.contains("--quick run"));
    }

    #[test]
    fn the_table_keeps_its_format() {
        let mut out = Vec::new();
        print_scale(&mut out, &results()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("    1000       1         1000       100000     100x\n"),
            "{text}"
        );
        assert!(
            text.contains("ratio 100k/1k regions: 3.00 (target <= 3)"),
            "{text}"
        );
    }
}
