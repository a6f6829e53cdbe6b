"""Fixtures of the Python package's tests: the real servers of the Rust test
harness (nginx, vsftpd, sshd on loopback), started once per session by
``cargo xtask servers start --json``, and a small local HTTP server that
records what it is sent."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import socket
import subprocess
import threading
from typing import Callable, Dict, List, Optional, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


class Servers:
    def __init__(self, info: Dict[str, object]) -> None:
        self.info = info
        self.data_dir = pathlib.Path(str(info["data_dir"]))
        self.ca_cert = str(info["ca_cert"])
        self.known_hosts = str(info["known_hosts"])
        self.ssh_key = str(info["ssh_key"])
        self.ftp_password = str(info["ftp_password"])
        self.sftp_password = str(info["sftp_password"])

    def write(self, rel: str, data: bytes) -> bytes:
        """Puts a file where every server serves it, readable by all."""
        path = self.data_dir / rel
        for parent in reversed(path.relative_to(self.data_dir).parents):
            d = self.data_dir / parent
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
        path.write_bytes(data)
        os.chmod(path, 0o644)
        return data

    def http(self, rel: str) -> str:
        return f"{self.info['http']}{rel}"

    def https(self, rel: str) -> str:
        return f"{self.info['https']}{rel}"

    def ftp(self, rel: str) -> str:
        return f"{self.info['ftp']}{rel}"

    def sftp(self, rel: str, password: bool = True) -> str:
        """An SFTP URL; with the password in it, as the original's README has."""
        url = f"{self.info['sftp']}{rel}"
        if password:
            user = str(self.info["sftp_user"])
            url = url.replace(f"sftp://{user}@", f"sftp://{user}:{self.sftp_password}@", 1)
        return url


@pytest.fixture(scope="session")
def servers() -> Servers:
    xtask = os.environ.get("PYMATRIS_XTASK") or str(ROOT / "target" / "debug" / "xtask")
    if os.path.exists(xtask):
        cmd = [xtask, "servers", "start", "--json"]
    else:
        cmd = ["cargo", "run", "-q", "-p", "xtask", "--", "servers", "start", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    info = None
    for line in proc.stdout:
        if line.startswith("{"):
            info = json.loads(line)
            break
    if info is None:
        proc.wait(30)
        pytest.fail(f"cargo xtask servers start --json printed no description (exit {proc.returncode})")
    yield Servers(info)
    # Closing stdin stops the servers and removes their files.
    proc.stdin.close()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A local HTTP server that records each request's path and headers and
    answers each path as `routes` says: `(status, body)`."""

    def __init__(self) -> None:
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        self.routes: Dict[str, Callable[[], Tuple[int, bytes]]] = {}
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                recorder.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = recorder.routes.get(self.path)
                status, body = route() if route else (404, b"no such file\n")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def hits(self, path: str) -> List[Dict[str, str]]:
        return [h for p, h in self.requests if p == path]


@pytest.fixture()
def recorder() -> Recorder:
    r = Recorder()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture()
def quiet_session():
    """A SessionConfig factory with the harness's host keys and CA trusted."""
    from pymatris import SessionConfig

    def make(servers: Optional[Servers] = None, **kwargs: object) -> SessionConfig:
        if servers is not None:
            kwargs.setdefault("known_hosts", servers.known_hosts)
            kwargs.setdefault("ca_cert", servers.ca_cert)
        kwargs.setdefault("file_progress", False)
        return SessionConfig(**kwargs)

    return make
