//! Getting a bench run ready: which workloads and tools it has, the
//! binaries it runs, and the command line the report names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::data::{self, DataFile, DataSet, Proto, Workload};
use super::invocation;
use super::machine;
use super::measure;
use super::tools::{self, Ctx, Tool};
use super::{Args, wan};

/// One name of `--tools pymatris,curl`.
pub(super) fn parse_tool(name: &str) -> Result<Tool, String> {
    let name = name.trim();
    tools::ALL
        .into_iter()
        .chain([Tool::PymatrisAt])
        .find(|t| t.slug() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = tools::ALL.iter().map(|t| t.slug()).collect();
            format!("unknown tool {name:?}; known: {}", known.join(", "))
        })
}

/// The workloads `--smoke` or `--only` ask for.
pub(super) fn select_workloads(args: &Args) -> anyhow::Result<Vec<Workload>> {
    if args.smoke {
        return Ok(vec![data::smoke_workload()]);
    }
    let all = if args.wan {
        wan::workloads()
    } else {
        data::workloads()
    };
    let Some(pattern) = &args.only else {
        return Ok(all);
    };
    let chosen: Vec<Workload> = all.iter().filter(|w| w.matches(pattern)).cloned().collect();
    if chosen.is_empty() {
        let ids: Vec<String> = all
            .iter()
            .map(|w| format!("{} ({})", w.id, w.title))
            .collect();
        bail!(
            "--only {pattern:?} matches no workload of: {}",
            ids.join(", ")
        );
    }
    Ok(chosen)
}

/// The tools found on `PATH`, and a note for each one missing.
pub(super) fn installed(tools: Vec<Tool>) -> (Vec<Tool>, Vec<String>) {
    let mut missing = Vec::new();
    let found = tools
        .into_iter()
        .filter(|&t| {
            let found = matches!(
                t,
                Tool::Pymatris | Tool::PymatrisAt | Tool::Python | Tool::Baseline
            ) || machine::find_in_path(t.program()).is_some();
            if !found {
                missing.push(format!(
                    "{} is not installed (Debian package `{}`): left out",
                    t.name(),
                    t.package()
                ));
            }
            found
        })
        .collect();
    (found, missing)
}

/// Installs the Python package from `crates/py` (a release build, as
/// `pip install ./crates/py` makes it) into the harness's venv, and returns
/// that venv's `python`.
pub(super) fn install_python_package(root: &Path) -> anyhow::Result<PathBuf> {
    let python = pymatris_harness::python::venv_python(&["tqdm==4.70.1"])?;
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--force-reinstall", "--no-deps"])
        .arg(root.join("crates/py"))
        .output()
        .context("running pip install ./crates/py")?;
    if !out.status.success() {
        bail!(
            "pip install ./crates/py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(python)
}

/// How this run was asked for, for the report.
pub(super) fn command_line(args: &Args, runs: u32) -> String {
    if args.smoke {
        return "cargo xtask bench --smoke".to_owned();
    }
    let mut c = format!("cargo xtask bench --runs {runs}");
    if args.wan {
        c.push_str(" --wan");
    }
    if args.quick {
        c.push_str(" --quick");
    }
    if args.with_unbuilt {
        c.push_str(" --with-unbuilt");
    }
    if args.baseline.is_some() {
        c.push_str(" --baseline FILE");
    }
    if let Some(tools) = &args.tools {
        let slugs: Vec<&str> = tools.iter().map(|t| t.slug()).collect();
        c.push_str(" --tools ");
        c.push_str(&slugs.join(","));
    }
    for a in &args.pymatris_arg {
        c.push_str(" --pymatris-arg=");
        c.push_str(&invocation::quote(a));
    }
    if let Some(o) = &args.only {
        c.push_str(" --only ");
        c.push_str(&invocation::quote(o));
    }
    c
}

/// The dev build of the CLI (what `cargo test` builds too), for `--smoke`.
pub(super) fn build_dev_cli(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pymatris-cli"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the pymatris CLI failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target
        .join("debug")
        .join(format!("pymatris{}", std::env::consts::EXE_SUFFIX)))
}

/// Whether pymatris can do a protocol, as a one-file probe download tells.
#[derive(Debug)]
pub(super) enum Probe {
    Works,
    /// This build has no such protocol: its workloads are skipped.
    NotBuilt(String),
    /// Something else failed: the workloads run (and pymatris's cells will
    /// likely show the failure).
    Failed(String),
}

/// Downloads one small file over `proto` with pymatris.
pub(super) fn probe(ctx: &Ctx<'_>, proto: Proto, wrapper: &Path) -> Probe {
    let rel = "probe/probe.bin";
    let source = ctx
        .servers
        .write_file(rel, &pymatris_harness::random_bytes(4096, 7));
    let file = DataFile {
        rel: rel.to_owned(),
        name: "probe.bin".to_owned(),
        source,
        size: 4096,
    };
    let wl = Workload {
        id: "probe",
        title: "probe",
        proto,
        data: DataSet::Smoke,
        parallel: None,
        per_file: false,
    };
    let out = ctx.scratch.join(format!("probe-{}", proto.scheme()));
    let result = (|| -> Result<(), String> {
        measure::fresh_dir(&out).map_err(|e| e.to_string())?;
        let inv = ctx
            .invocation(Tool::Pymatris, &wl, std::slice::from_ref(&file), &out)
            .map_err(|e| format!("{e:#}"))?;
        let log = ctx
            .scratch
            .join("logs")
            .join(format!("probe-{}.log", proto.scheme()));
        measure::run_timed(&inv, &out, &log, Duration::from_secs(60), wrapper)?;
        measure::verify(&out, std::slice::from_ref(&file))
    })();
    let _ = std::fs::remove_dir_all(&out);
    match result {
        Ok(()) => Probe::Works,
        Err(e) if e.contains("not supported by this build") || e.contains("unsupported scheme") => {
            // Keep pymatris's own sentence, without the URL.
            let why = e
                .split_once("unsupported scheme: ")
                .map_or(e.as_str(), |(_, why)| why);
            Probe::NotBuilt(why.to_owned())
        }
        Err(e) => Probe::Failed(e),
    }
}
