"""SessionConfig(proxy="socks5://...") serves every protocol, FTP too, not
only HTTP: through Debian's microsocks on loopback, whose log line per
connection shows where it went."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from pymatris import Downloader

from conftest import closed_port


@pytest.fixture
def socks(tmp_path):
    exe = shutil.which("microsocks")
    if exe is None:
        pytest.skip("microsocks is not installed (cargo xtask deps)")
    port = closed_port()
    log = tmp_path / "socks.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "-i", "127.0.0.1", "-p", str(port), "-u", "pyuser", "-P", "Py-s3cret"],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "microsocks did not start"
            time.sleep(0.05)
    yield f"socks5://pyuser:Py-s3cret@127.0.0.1:{port}", log
    proc.kill()
    proc.wait()


def test_a_socks5_proxy_carries_ftp(servers, socks, tmp_path, quiet_session, monkeypatch):
    for name in ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy, log = socks
    body = servers.write("socks/py.bin", os.urandom(300_000))
    dm = Downloader(max_splits=1, session_config=quiet_session(servers, proxy=proxy))
    dm.enqueue_file(servers.ftp("socks/py.bin"), path=str(tmp_path / "out"))
    results = dm.download()
    assert not results.errors, results.errors
    assert (tmp_path / "out" / "py.bin").read_bytes() == body
    ftp_port = servers.ftp("").split("@")[-1].split("/")[0].split(":")[-1]
    assert f"connected to 127.0.0.1:{ftp_port}" in log.read_text(), log.read_text()
