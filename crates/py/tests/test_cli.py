"""The wheel's `pymatris` command is the Rust command line tool."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def wheel_command() -> str:
    path = shutil.which("pymatris", path=str(pathlib.Path(sys.executable).parent))
    assert path, "the wheel installed no pymatris command beside this python"
    return path


def rust_cli() -> str:
    path = os.environ.get("PYMATRIS_CLI") or str(ROOT / "target" / "debug" / "pymatris")
    if not os.path.exists(path):
        pytest.skip("no Rust CLI built (cargo build -p pymatris-cli)")
    return path


def run(cmd, *args, cwd=None):
    return subprocess.run([cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_same_help_and_version_as_the_rust_cli():
    for args in (["--help"], ["--version"]):
        ours, rust = run(wheel_command(), *args), run(rust_cli(), *args)
        assert (ours.returncode, ours.stdout) == (rust.returncode, rust.stdout)
    assert "--max-parallel" in run(wheel_command(), "--help").stdout


def test_same_exit_codes_and_files(servers, tmp_path):
    servers.write("cli/ok.txt", b"ok")
    ok, missing = servers.http("cli/ok.txt"), servers.http("cli/missing.txt")
    for name, cmd in (("wheel", wheel_command()), ("rust", rust_cli())):
        d = tmp_path / name
        good = run(cmd, "--quiet", "--dir", str(d), ok)
        assert good.returncode == 0, good.stderr
        assert (d / "ok.txt").read_bytes() == b"ok"
        bad = run(cmd, "--quiet", "--dir", str(d), missing)
        assert bad.returncode == 1 and "HTTP 404" in bad.stderr
        usage = run(cmd, "--max-parallel", "0", ok)
        assert usage.returncode == 2


def test_ctrl_c_ends_the_command_with_130(servers, tmp_path):
    """The Rust tool's own Ctrl-C handling, not a Python traceback."""
    import signal
    import time

    servers.write("cli/slow.bin", os.urandom(1 << 22))
    proc = subprocess.Popen(
        [wheel_command(), "--quiet", "--max-speed", "256K", "--dir", str(tmp_path), servers.http("cli/slow.bin")],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert os.listdir(tmp_path) == []
