"""The script of the benchmark's Python row (xtask/src/bench/pymatris_api.py)
downloads what it is given, over every protocol, and fails when a file
fails."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "xtask" / "src" / "bench" / "pymatris_api.py"


def test_the_bench_script_downloads_its_list(servers, tmp_path):
    files = {f"bench/{i}.bin": servers.write(f"bench/{i}.bin", os.urandom(3000 + i)) for i in range(4)}
    urls = [servers.http("bench/0.bin"), servers.https("bench/1.bin"), servers.ftp("bench/2.bin"),
            servers.sftp("bench/3.bin", password=False)]
    listing = tmp_path / "urls"
    listing.write_text("\n".join(urls) + "\n")
    out = tmp_path / "out"
    args = [sys.executable, str(SCRIPT), str(listing), str(out), "max_parallel=2",
            f"ca_cert={servers.ca_cert}", f"identity={servers.ssh_key}", f"known_hosts={servers.known_hosts}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for rel, body in files.items():
        assert (out / rel.split("/")[1]).read_bytes() == body
    listing.write_text(servers.http("bench/missing.bin") + "\n")
    failed = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "404" in failed.stderr
