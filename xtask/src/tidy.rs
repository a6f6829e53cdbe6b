//! `cargo xtask tidy`: the rules that keep the workspace's shape, checked
//! rather than remembered (issue 12). Core names no protocol library, no
//! protocol crate leans on another, no source file grows past what one
//! reader can hold, and the API docs build without warnings. `cargo xtask
//! ci` runs it after clippy.
//!
//! Each rule is a pure function over what cargo or the file system says, so
//! a unit test shows it fails when the rule is broken.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Libraries that belong to a protocol crate, never to core (a crate name
/// matches when it is one of these or starts with one and a `-`).
const PROTOCOL_LIBRARIES: &[&str] = &["hyper", "rustls", "russh", "suppaftp"];

/// Past this many lines (before a file's `#[cfg(test)]` module), a source
/// file is split into sibling modules.
const MAX_LINES: usize = 600;

/// Files over [`MAX_LINES`] that another change is splitting right now. An
/// entry fails the check once its file is gone or fits, so the list cannot
/// outlive the split.
const BEING_SPLIT: &[&str] = &[];

pub(crate) fn run() -> anyhow::Result<()> {
    let root = crate::ci::workspace_root();
    let mut failures = Vec::new();

    let tree = output(
        &root,
        "cargo",
        &[
            "tree",
            "-p",
            "pymatris-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ],
    )?;
    failures.extend(protocol_libraries_in_core(&tree));

    let metadata = output(
        &root,
        "cargo",
        &["metadata", "--format-version", "1", "--no-deps"],
    )?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("reading cargo metadata")?;
    failures.extend(protocols_depending_on_protocols(&metadata));

    let mut sizes = Vec::new();
    for dir in ["crates", "xtask"] {
        for path in rust_files(&root.join(dir))? {
            let rel = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if is_test_file(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            sizes.push((rel, code_lines(&text)));
        }
    }
    failures.extend(oversized_files(&sizes, BEING_SPLIT));

    eprintln!("$ RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .status()
        .context("running cargo doc")?;
    if !status.success() {
        failures.push("`cargo doc --workspace --no-deps` has warnings".to_owned());
    }

    if failures.is_empty() {
        eprintln!("tidy: all rules hold");
        return Ok(());
    }
    for f in &failures {
        eprintln!("tidy: {f}");
    }
    bail!("{} tidy rule(s) broken", failures.len())
}

/// The stdout of a command run in `root`, or an error with its stderr.
fn output(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let program = match program {
        "cargo" => std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()),
        other => other.to_owned(),
    };
    let out = Command::new(&program)
        .current_dir(root)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The protocol libraries in `cargo tree --prefix none` of core.
fn protocol_libraries_in_core(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            PROTOCOL_LIBRARIES
                .iter()
                .any(|lib| *name == *lib || name.starts_with(&format!("{lib}-")))
        })
        .map(|name| format!("pymatris-core depends on {name}, a protocol's library"))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Every dependency (of any kind) of a `pymatris-proto-*` package on
/// another, from `cargo metadata --no-deps`.
fn protocols_depending_on_protocols(metadata: &serde_json::Value) -> Vec<String> {
    let is_protocol = |name: &str| name.starts_with("pymatris-proto-");
    let mut found = Vec::new();
    let packages = metadata["packages"].as_array().map_or(&[][..], |p| p);
    for package in packages {
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        if !is_protocol(name) {
            continue;
        }
        let deps = package["dependencies"].as_array().map_or(&[][..], |d| d);
        for dep in deps {
            if let Some(dep) = dep["name"].as_str()
                && is_protocol(dep)
                && dep != name
            {
                found.push(format!(
                    "{name} depends on {dep}: protocols share code through pymatris-core"
                ));
            }
        }
    }
    found
}

/// Test code, which may be as long as its cases need: the `tests/` crate,
/// every crate's `tests/` directory, and unit tests kept in a file of
/// their own (`mod tests;` as `tests.rs`).
fn is_test_file(rel: &str) -> bool {
    rel.starts_with("tests/") || rel.contains("/tests/") || rel.ends_with("/tests.rs")
}

/// The lines of a source file before its unit tests (`#[cfg(test)]` at the
/// start of a line).
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

/// Files over [`MAX_LINES`] not being split, and entries of `being_split`
/// that no longer need to be there.
fn oversized_files(sizes: &[(String, usize)], being_split: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, lines) in sizes {
        if *lines > MAX_LINES && !being_split.contains(&rel.as_str()) {
            found.push(format!(
                "{rel} has {lines} lines before its tests (at most {MAX_LINES}): split it into \
                 sibling modules"
            ));
        }
    }
    for listed in being_split {
        match sizes.iter().find(|(rel, _)| rel == listed) {
            None => found.push(format!(
                "{listed} is gone: remove it from the files being split (xtask/src/tidy.rs)"
            )),
            Some((_, lines)) if *lines <= MAX_LINES => found.push(format!(
                "{listed} fits in {MAX_LINES} lines now: remove it from the files being split \
                 (xtask/src/tidy.rs)"
            )),
            Some(_) => {}
        }
    }
    found
}

/// Every `.rs` file under `dir`, `target/` directories left out.
fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if entry.file_name() != "target" {
                    stack.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_library_in_cores_tree_is_named() {
        let clean = "pymatris-core v0.1.0 (/x)\nbytes v1.10.1\nurl v2.5.4\n";
        assert!(protocol_libraries_in_core(clean).is_empty());
        let dirty = "pymatris-core v0.1.0 (/x)\nhyper-util v0.1.16\nrustls v0.23.0\n\
                     rustls v0.23.0\nhyperlocal-ish v1.0.0\n";
        assert_eq!(
            protocol_libraries_in_core(dirty),
            [
                "pymatris-core depends on hyper-util, a protocol's library",
                "pymatris-core depends on rustls, a protocol's library",
            ]
        );
    }

    #[test]
    fn a_protocol_crate_depending_on_another_is_named() {
        let metadata = |ftp_deps: &[&str]| {
            let deps: Vec<_> = ftp_deps
                .iter()
                .map(|d| serde_json::json!({ "name": d }))
                .collect();
            serde_json::json!({ "packages": [
                { "name": "pymatris-proto-ftp", "dependencies": deps },
                { "name": "pymatris-cli", "dependencies": [
                    { "name": "pymatris-proto-ftp" }, { "name": "pymatris-proto-http" }
                ] },
            ] })
        };
        assert!(protocols_depending_on_protocols(&metadata(&["pymatris-core"])).is_empty());
        assert_eq!(
            protocols_depending_on_protocols(&metadata(&["pymatris-core", "pymatris-proto-http"])),
            [
                "pymatris-proto-ftp depends on pymatris-proto-http: protocols share code through \
              pymatris-core"
            ]
        );
    }

    #[test]
    fn lines_are_counted_up_to_the_unit_tests() {
        assert_eq!(code_lines("a\nb\n\n#[cfg(test)]\nmod tests {}\n"), 3);
        assert_eq!(code_lines("a\n    #[cfg(test)]\nb\n"), 3);
        assert!(is_test_file("tests/src/fault_server.rs"));
        assert!(is_test_file("crates/proto-ftp/tests/vsftpd.rs"));
        assert!(is_test_file("crates/core/src/scheduler/parts/tests.rs"));
        assert!(!is_test_file("crates/core/src/tests_util.rs"));
    }

    #[test]
    fn long_files_fail_unless_being_split_and_the_list_cannot_go_stale() {
        let sizes = |n: usize| {
            vec![
                ("crates/a.rs".to_owned(), 10),
                ("crates/big.rs".to_owned(), n),
            ]
        };
        assert!(oversized_files(&sizes(600), &[]).is_empty());
        let too_long = oversized_files(&sizes(601), &[]);
        assert_eq!(too_long.len(), 1);
        assert!(too_long[0].starts_with("crates/big.rs has 601 lines"));
        assert!(oversized_files(&sizes(900), &["crates/big.rs"]).is_empty());
        // Once the split lands, the exemption itself fails.
        let fits = oversized_files(&sizes(400), &["crates/big.rs"]);
        assert!(fits[0].contains("fits in 600 lines now"), "{fits:?}");
        let gone = oversized_files(&sizes(400), &["crates/gone.rs"]);
        assert!(gone[0].contains("crates/gone.rs is gone"), "{gone:?}");
    }
}
