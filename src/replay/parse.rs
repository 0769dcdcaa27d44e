//! Reading replay scripts: words, numbers, `key=value` options.

use std::collections::BTreeMap;

use addrspace_core::Unregister;

use super::{Command, Expect, NewKind, Script, ScriptError, Step, Target};
use crate::pseries::{Action, DeviceSpec, PAST_RAM};

/// Splits a line into words: white space separates, `"..."` quotes
/// (for names with spaces), `#` outside quotes starts a comment.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            break;
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => word.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '"' {
                    // key="value with spaces"
                    chars.next();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(c) => word.push(c),
                            None => return Err("unterminated quote".into()),
                        }
                    }
                    continue;
                }
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

/// `line` without its comment (a `#` outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Reads a number: decimal, `0x` hex, with an optional binary suffix
/// `K`, `M`, `G`, `T` (KiB...), or `2^N`.
pub(crate) fn number(text: &str) -> Result<u128, String> {
    let bad = || format!("{text:?} is not a number (decimal, 0x hex, K/M/G/T suffix, or 2^N)");
    if let Some(exp) = text.strip_prefix("2^") {
        let e: u32 = exp.parse().map_err(|_| bad())?;
        return 1u128.checked_shl(e).filter(|_| e <= 64).ok_or_else(bad);
    }
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M')) => (&text[..i], 20),
        Some((i, 'G')) => (&text[..i], 30),
        Some((i, 'T')) => (&text[..i], 40),
        _ => (text, 0),
    };
    let digits = digits.replace('_', "");
    let value = match digits.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16),
        None => digits.parse::<u128>(),
    }
    .map_err(|_| bad())?;
    value
        .checked_mul(1u128 << shift)
        .filter(|v| *v <= 1u128 << 64)
        .ok_or_else(bad)
}

fn u64_of(text: &str) -> Result<u64, String> {
    let v = number(text)?;
    u64::try_from(v).map_err(|_| format!("{text:?} does not fit in 64 bits"))
}

fn u32_of(text: &str) -> Result<u32, String> {
    let v = number(text)?;
    u32::try_from(v).map_err(|_| format!("{text:?} is too large"))
}

/// The words of one command: positional arguments and `key=value`
/// options, each option read at most once.
struct Args {
    verb: String,
    positional: Vec<String>,
    options: BTreeMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn new(words: Vec<String>, flag_names: &[&str]) -> Result<Args, String> {
        let mut it = words.into_iter();
        let verb = it.next().unwrap_or_default();
        let mut args = Args {
            verb,
            positional: Vec::new(),
            options: BTreeMap::new(),
            flags: Vec::new(),
        };
        for w in it {
            if let Some((k, v)) = w.split_once('=') {
                if args.options.insert(k.to_owned(), v.to_owned()).is_some() {
                    return Err(format!("option {k:?} given twice"));
                }
            } else if flag_names.contains(&w.as_str()) {
                args.flags.push(w);
            } else {
                args.positional.push(w);
            }
        }
        Ok(args)
    }

    /// Exactly `n` positional arguments, named in `usage`.
    fn positional(&self, n: usize, usage: &str) -> Result<&[String], String> {
        if self.positional.len() != n {
            return Err(format!(
                "`{}` takes {n} argument(s), got {}; usage: {usage}",
                self.verb,
                self.positional.len()
            ));
        }
        Ok(&self.positional)
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.options.remove(key)
    }

    fn required(&mut self, key: &str, usage: &str) -> Result<String, String> {
        self.take(key)
            .ok_or_else(|| format!("`{}` needs {key}=...; usage: {usage}", self.verb))
    }

    fn u64_or(&mut self, key: &str, default: u64) -> Result<u64, String> {
        self.take(key).map_or(Ok(default), |v| u64_of(&v))
    }

    fn u32_or(&mut self, key: &str, default: u32) -> Result<u32, String> {
        self.take(key).map_or(Ok(default), |v| u32_of(&v))
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Fails on options nobody took.
    fn done(self) -> Result<(), String> {
        match self.options.keys().next() {
            Some(k) => Err(format!("`{}` has no option {k:?}", self.verb)),
            None => Ok(()),
        }
    }
}

/// Permission bits: `r`, `w`, `rw`, `none`, or a number 0-3.
fn perm(text: &str) -> Result<u8, String> {
    Ok(match text {
        "none" => 0,
        "r" => 1,
        "w" => 2,
        "rw" => 3,
        n => match number(n) {
            Ok(v) if v <= 3 => v as u8,
            _ => return Err(format!("permission {text:?} is not r, w, rw, none or 0-3")),
        },
    })
}

/// A guest page: a number, or `past-ram` for the first page past RAM.
fn page(text: &str) -> Result<u64, String> {
    if text == "past-ram" {
        Ok(PAST_RAM)
    } else {
        u64_of(text)
    }
}

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is not on or off")),
    }
}

const ADD: &str =
    "add ram|rom|mmio|container|reservation NAME SIZE in=PARENT at=ADDR [prio=N], or add alias NAME SIZE target=REGION [offset=OFF] in=PARENT at=ADDR [prio=N]";
const ATTACH: &str = "attach NAME in=PARENT at=ADDR [prio=N]";
const PLUG: &str = "plug spapr|spapr-v1|type1 GROUP [phb=N] [shared]";
const TCE: &str = "put-tce [phb=N] [slot=N] page=N target=PAGE [perm=rw]";
const INDIRECT: &str = "put-indirect [phb=N] [slot=N] page=N targets=P,P,... [perm=rw]";
const STUFF: &str = "stuff [phb=N] [slot=N] page=N target=PAGE count=N [perm=rw]";
const CREATE: &str = "create-window [phb=N] page-shift=N window-shift=N";
const EXPECT: &str =
    "expect events N [AS] | expect map AS ADDR NAME|- | expect said TEXT | expect invariants";

fn command(words: Vec<String>) -> Result<Command, String> {
    if words[0] == "expect" {
        return expect(&words[1..]);
    }
    let mut a = Args::new(words, &["shared", "replay", "detach"])?;
    let verb = a.verb.clone();
    let cmd = match verb.as_str() {
        "add" => {
            let usage = ADD;
            if a.positional.len() != 3 {
                return Err(format!("usage: {usage}"));
            }
            let kind = match a.positional[0].as_str() {
                "ram" => NewKind::Ram,
                "rom" => NewKind::Rom,
                "mmio" => NewKind::Mmio,
                "container" => NewKind::Container,
                "reservation" => NewKind::Reservation,
                "alias" => NewKind::Alias {
                    target: a.required("target", usage)?,
                    offset: a.u64_or("offset", 0)?,
                },
                other => return Err(format!("cannot add a {other:?}; usage: {usage}")),
            };
            let name = a.positional[1].clone();
            let size = number(&a.positional[2])?;
            let parent = a.required("in", usage)?;
            let addr = u64_of(&a.required("at", usage)?)?;
            let priority = prio(&mut a)?;
            a.done()?;
            return Ok(Command::Add {
                kind,
                name,
                size,
                parent,
                addr,
                priority,
            });
        }
        "attach" => {
            let name = a.positional(1, ATTACH)?[0].clone();
            let parent = a.required("in", ATTACH)?;
            let addr = u64_of(&a.required("at", ATTACH)?)?;
            let priority = prio(&mut a)?;
            Command::Attach {
                name,
                parent,
                addr,
                priority,
            }
        }
        "del" => Command::Del(a.positional(1, "del NAME")?[0].clone()),
        "move" => {
            let p = a.positional(2, "move NAME ADDR")?;
            Command::Move(p[0].clone(), u64_of(&p[1])?)
        }
        "enable" | "disable" => Command::Enable(
            a.positional(1, "enable|disable NAME")?[0].clone(),
            verb == "enable",
        ),
        "priority" => {
            let p = a.positional(2, "priority NAME N")?;
            let n = p[1]
                .parse()
                .map_err(|_| format!("priority {:?} is not an integer", p[1]))?;
            Command::Priority(p[0].clone(), n)
        }
        "resize" => {
            let p = a.positional(2, "resize NAME SIZE")?;
            Command::Resize(p[0].clone(), number(&p[1])?)
        }
        "alias-offset" => {
            let p = a.positional(2, "alias-offset NAME OFFSET")?;
            Command::AliasOffset(p[0].clone(), u64_of(&p[1])?)
        }
        "readonly" => {
            let p = a.positional(2, "readonly NAME on|off")?;
            Command::Readonly(p[0].clone(), on_off(&p[1])?)
        }
        "begin" => {
            a.positional(0, "begin")?;
            Command::Begin
        }
        "commit" => {
            a.positional(0, "commit")?;
            Command::Commit
        }
        "plug" => {
            let p = a.positional(2, PLUG)?.to_vec();
            let group = u32_of(&p[1])?;
            let phb = a.u32_or("phb", 0)?;
            let mut spec = match p[0].as_str() {
                "spapr" => DeviceSpec::spapr(group, phb),
                "spapr-v1" => DeviceSpec::spapr_v1(group, phb),
                "type1" => DeviceSpec::type1(group),
                other => return Err(format!("unknown device kind {other:?}; usage: {PLUG}")),
            };
            if a.has("shared") {
                spec = spec.shared();
            }
            Command::Guest(Action::Plug(spec))
        }
        "unplug" => {
            let nth = a.positional(1, "unplug NTH [replay|detach]")?[0].clone();
            let mode = if a.has("detach") {
                Unregister::Detach
            } else {
                Unregister::Replay
            };
            Command::Guest(Action::Unplug {
                nth: u64_of(&nth)? as usize,
                mode,
            })
        }
        "reset" => {
            a.positional(0, "reset")?;
            Command::Guest(Action::Reset)
        }
        "put-tce" => {
            a.positional(0, TCE)?;
            Command::Guest(Action::PutTce {
                phb: a.u32_or("phb", 0)?,
                slot: a.u64_or("slot", 0)? as usize,
                page: u64_of(&a.required("page", TCE)?)?,
                target: page(&a.required("target", TCE)?)?,
                perm: a.take("perm").map_or(Ok(3), |p| perm(&p))?,
            })
        }
        "put-indirect" => {
            a.positional(0, INDIRECT)?;
            let targets = a
                .required("targets", INDIRECT)?
                .split(',')
                .map(page)
                .collect::<Result<Vec<_>, _>>()?;
            if targets.is_empty() || targets.len() > 512 {
                return Err(format!("{} targets; 1 to 512 allowed", targets.len()));
            }
            Command::Guest(Action::PutIndirect {
                phb: a.u32_or("phb", 0)?,
                slot: a.u64_or("slot", 0)? as usize,
                page: u64_of(&a.required("page", INDIRECT)?)?,
                targets,
                perm: a.take("perm").map_or(Ok(3), |p| perm(&p))?,
            })
        }
        "stuff" => {
            a.positional(0, STUFF)?;
            Command::Guest(Action::Stuff {
                phb: a.u32_or("phb", 0)?,
                slot: a.u64_or("slot", 0)? as usize,
                page: u64_of(&a.required("page", STUFF)?)?,
                target: page(&a.required("target", STUFF)?)?,
                perm: a.take("perm").map_or(Ok(3), |p| perm(&p))?,
                count: u64_of(&a.required("count", STUFF)?)?,
            })
        }
        "query" => {
            a.positional(0, "query [phb=N]")?;
            Command::Guest(Action::Query {
                phb: a.u32_or("phb", 0)?,
            })
        }
        "create-window" => {
            a.positional(0, CREATE)?;
            Command::Guest(Action::CreateWindow {
                phb: a.u32_or("phb", 0)?,
                page_shift: u32_of(&a.required("page-shift", CREATE)?)?,
                window_shift: u32_of(&a.required("window-shift", CREATE)?)?,
            })
        }
        "remove-window" => {
            a.positional(0, "remove-window [phb=N] slot=N")?;
            Command::Guest(Action::RemoveWindow {
                phb: a.u32_or("phb", 0)?,
                slot: u64_of(&a.required("slot", "remove-window [phb=N] slot=N")?)? as usize,
            })
        }
        "reset-windows" => {
            a.positional(0, "reset-windows [phb=N]")?;
            Command::Guest(Action::ResetWindows {
                phb: a.u32_or("phb", 0)?,
            })
        }
        "" => return Err("empty command".into()),
        other => return Err(format!("unknown command {other:?}")),
    };
    a.done()?;
    Ok(cmd)
}

/// An `expect` line's words after `expect`, taken as written.
fn expect(p: &[String]) -> Result<Command, String> {
    let what = p.first().map(String::as_str).unwrap_or("");
    let e = match (what, p.len()) {
        ("events", 2 | 3) => Expect::Events(u64_of(&p[1])? as usize, p.get(2).cloned()),
        ("map", 4) => Expect::Map {
            space: p[1].clone(),
            addr: u64_of(&p[2])?,
            region: (p[3] != "-").then(|| p[3].clone()),
        },
        ("said", n) if n >= 2 => Expect::Said(p[1..].join(" ")),
        ("invariants", 1) => Expect::Invariants,
        _ => return Err(format!("usage: {EXPECT}")),
    };
    Ok(Command::Expect(e))
}

fn prio(a: &mut Args) -> Result<i32, String> {
    a.take("prio").map_or(Ok(0), |p| {
        p.parse()
            .map_err(|_| format!("priority {p:?} is not an integer"))
    })
}

fn machine(words: Vec<String>) -> Result<Target, String> {
    let usage = "machine pseries [ram=SIZE] [phbs=N]";
    let mut a = Args::new(words, &[])?;
    if a.positional.len() != 1 || a.positional[0] != "pseries" {
        return Err(format!("usage: {usage}"));
    }
    let ram = a.take("ram").map(|r| u64_of(&r)).transpose()?;
    let phbs = a.u32_or("phbs", 1)?;
    if phbs == 0 || phbs > 8 {
        return Err(format!("phbs={phbs}: 1 to 8 PHBs"));
    }
    a.done()?;
    Ok(Target::Pseries { ram, phbs })
}

impl Script {
    /// Reads a script. `name` is used in error messages (`name:line: ...`).
    pub fn parse(name: &str, text: &str) -> Result<Script, ScriptError> {
        let mut target = None;
        let mut steps = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| ScriptError {
                file: name.to_owned(),
                line,
                message,
            };
            let mut w = words(raw).map_err(err)?;
            if w.is_empty() {
                continue;
            }
            let text = strip_comment(raw).trim().to_owned();
            if w[0] == "machine" {
                if !steps.is_empty() || target.is_some() {
                    return Err(err(
                        "`machine` must be the first command, and only one".into()
                    ));
                }
                target = Some(machine(w).map_err(err)?);
                continue;
            }
            let must_fail = w[0] == "fail";
            if must_fail {
                w.remove(0);
                if w.first().is_some_and(|v| v == "expect" || v == "fail") {
                    return Err(err("`fail` takes a command, not an expectation".into()));
                }
            }
            let command = command(w).map_err(err)?;
            steps.push(Step {
                line,
                text,
                command,
                must_fail,
            });
        }
        Ok(Script {
            name: name.to_owned(),
            target: target.unwrap_or(Target::Tree),
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_space_keep_quotes_and_drop_comments() {
        assert_eq!(
            words(r#"del "PCI ROM" in="pci bus"  # gone"#).unwrap(),
            ["del", "PCI ROM", "in=pci bus"]
        );
        assert!(words("del \"open").is_err());
    }

    #[test]
    fn numbers_take_hex_suffixes_and_powers() {
        assert_eq!(number("0x1000").unwrap(), 0x1000);
        assert_eq!(number("64K").unwrap(), 0x1_0000);
        assert_eq!(number("2G").unwrap(), 0x8000_0000);
        assert_eq!(number("2^64").unwrap(), 1 << 64);
        assert_eq!(number("1_000").unwrap(), 1000);
        assert!(number("2^65").unwrap_err().contains("\"2^65\""));
        assert!(number("0x").is_err());
        assert!(number("17E").is_err());
    }

    #[test]
    fn a_script_names_its_bad_line() {
        let err = Script::parse("s.replay", "# ok\ndisable x\nmove x\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.to_string(),
            "s.replay:3: `move` takes 2 argument(s), got 1; usage: move NAME ADDR"
        );
        let err = Script::parse("s", "put-tce page=1 target=2 colour=red\n").unwrap_err();
        assert!(err.message.contains("no option \"colour\""), "{err}");
        let err = Script::parse("s", "disable x\nmachine pseries\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn commands_parse_with_defaults() {
        let s = Script::parse(
            "s",
            "machine pseries ram=512M\nplug spapr 1 shared\nput-tce page=3 target=past-ram perm=r\nfail unplug 0 detach\nexpect said H_SUCCESS here\n",
        )
        .unwrap();
        assert_eq!(
            s.target,
            Target::Pseries {
                ram: Some(0x2000_0000),
                phbs: 1
            }
        );
        assert_eq!(
            s.steps[0].command,
            Command::Guest(Action::Plug(DeviceSpec::spapr(1, 0).shared()))
        );
        assert_eq!(
            s.steps[1].command,
            Command::Guest(Action::PutTce {
                phb: 0,
                slot: 0,
                page: 3,
                target: PAST_RAM,
                perm: 1
            })
        );
        assert!(s.steps[2].must_fail);
        assert_eq!(
            s.steps[3].command,
            Command::Expect(Expect::Said("H_SUCCESS here".into()))
        );
    }
}
