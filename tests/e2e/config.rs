//! Where settings come from besides flags (a flag beats its `PYMATRIS_*`
//! variable, which beats the config file, which beats the default), and
//! the shell completion scripts.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pymatris_tests::fault_server::{FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin};

/// Runs pymatris with `XDG_CONFIG_HOME` at `xdg` and the variables `env`,
/// with nothing of the caller's environment that could change the run.
fn run_with(xdg: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(pymatris_bin());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("PYMATRIS_") || name.to_lowercase().ends_with("_proxy") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("XDG_CONFIG_HOME", xdg)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_config_file() {
    let server = FaultServer::start([("/f.bin", Route::new(&b"hello"[..]))]);
    let url = server.url("/f.bin");
    let root = tempfile::tempdir().unwrap();
    let xdg = root.path().join("xdg");
    let [from_file, from_env, from_flag] = ["file", "env", "flag"].map(|d| root.path().join(d));
    std::fs::create_dir_all(xdg.join("pymatris")).unwrap();
    std::fs::write(
        xdg.join("pymatris").join("config.toml"),
        format!(
            "# defaults\ndir = {:?}\nquiet = true\nmax-tries = 1\n",
            from_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let env_dir = from_env.to_str().unwrap();
    let flag_dir = from_flag.to_str().unwrap();

    let out = run_with(&xdg, &[], &[&url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list_dir(&from_file), ["f.bin"]);
    // quiet = true: no summary line.
    assert!(!stderr(&out).contains("Downloaded"), "{}", stderr(&out));

    let out = run_with(&xdg, &[("PYMATRIS_DIR", env_dir)], &[&url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list_dir(&from_env), ["f.bin"]);

    let out = run_with(
        &xdg,
        &[("PYMATRIS_DIR", env_dir)],
        &["--dir", flag_dir, &url],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list_dir(&from_flag), ["f.bin"]);

    // A boolean variable reads as most programs read one.
    let out = run_with(
        &xdg,
        &[("PYMATRIS_QUIET", "0"), ("PYMATRIS_OVERWRITE", "yes")],
        &[&url],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Downloaded 1 file"),
        "{}",
        stderr(&out)
    );

    // --no-config: the default directory (here, the current one).
    let cwd = root.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = Command::new(pymatris_bin())
        .current_dir(&cwd)
        .env("XDG_CONFIG_HOME", &xdg)
        .args(["--no-config", "--quiet", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list_dir(&cwd), ["f.bin"]);

    // --config names another file.
    let other = root.path().join("other.toml");
    let other_dir = root.path().join("other");
    std::fs::write(&other, format!("dir = {:?}\n", other_dir.to_str().unwrap())).unwrap();
    let out = run_with(&xdg, &[], &["--config", other.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list_dir(&other_dir), ["f.bin"]);
}

#[test]
fn a_bad_config_file_is_a_usage_error_naming_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("bad.toml");
    let path = file.to_str().unwrap();
    for (text, wanted) in [
        ("max-parallel = 0\n", "key `max-parallel`"),
        ("max-paralel = 3\n", "unknown key `max-paralel`"),
        ("quiet = \"sure\"\n", "key `quiet`: expects true or false"),
        ("dir = [\n", "not valid TOML"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = run_with(
            root.path(),
            &[],
            &["--config", path, "http://127.0.0.1:9/x"],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(path), "{}", stderr(&out));
        assert!(stderr(&out).contains(wanted), "{wanted}: {}", stderr(&out));
    }
    // A file named on purpose must exist; the default one need not.
    let out = run_with(
        root.path(),
        &[],
        &["--config", "/nonexistent/x.toml", "http://127.0.0.1:9/x"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/x.toml"),
        "{}",
        stderr(&out)
    );
    // A bad setting on the command line wins over a good file, too: the
    // variable is checked, and named, as its flag would be.
    let out = run_with(
        root.path(),
        &[("PYMATRIS_MAX_TRIES", "0")],
        &["http://127.0.0.1:9/x"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-tries"), "{}", stderr(&out));
}

#[test]
fn completion_scripts_know_the_flags() {
    let root = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run_with(root.path(), &[], &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        for flag in ["max-parallel", "input-file", "no-config"] {
            assert!(script.contains(flag), "{shell}: {flag} missing");
        }
    }
    if Command::new("bash").arg("--version").output().is_ok() {
        // The bash script is valid bash.
        let out = run_with(root.path(), &[], &["completions", "bash"]);
        let file = root.path().join("c.bash");
        std::fs::write(&file, &out.stdout).unwrap();
        let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(check.status.success(), "{}", stderr(&check));
    }
    // An unknown shell is a usage error; URLs are still URLs.
    let out = run_with(root.path(), &[], &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
