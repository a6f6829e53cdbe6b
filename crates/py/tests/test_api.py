"""pymatris 0.0.10's API, point by point, against nginx, vsftpd and sshd."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import UserList

import pytest

import pymatris
from pymatris import Downloader, Results, SessionConfig
from pymatris import exceptions as exc

from conftest import closed_port


def test_readme_example(servers, tmp_path, monkeypatch):
    """The original README's "Example Usage", its URLs pointed at the local
    servers: five files over HTTPS, one over SFTP, a failing FTP."""
    monkeypatch.chdir(tmp_path)
    # The script itself is unchanged: trust and host keys come from the
    # environment, as a user of the original would set them.
    monkeypatch.setenv("PYMATRIS_KNOWN_HOSTS", servers.known_hosts)
    monkeypatch.setenv("SSL_CERT_FILE", servers.ca_cert)
    bodies = {f"pricecatcher_2022-0{i}.parquet": servers.write(f"readme/pricecatcher_2022-0{i}.parquet", os.urandom(50_000 * i)) for i in range(1, 6)}
    servers.write("readme/testfile.txt", b"hello from sftp\n")
    urls = [servers.https(f"readme/pricecatcher_2022-0{i}.parquet") for i in range(1, 6)]
    urls.append(servers.sftp("readme/testfile.txt"))
    urls.append(f"ftp://bob:bob@127.0.0.1:{closed_port()}/nonexistent.txt")

    dm = Downloader()
    for url in urls:
        dm.enqueue_file(url, path="./")
    results = dm.download()
    print(results)

    assert list(results) == [*bodies, "testfile.txt"]
    for name, body in bodies.items():
        assert (tmp_path / name).read_bytes() == body
    assert (tmp_path / "testfile.txt").read_bytes() == b"hello from sftp\n"
    assert [s.url for s in results.success] == [u.replace(f":{servers.sftp_password}@", ":***@") for u in urls[:6]]
    (error,) = results.errors
    assert error.url.startswith("ftp://bob:***@127.0.0.1:")
    assert isinstance(error.exception, exc.NetworkError)
    assert isinstance(error.exception, ConnectionError)
    text = str(results)
    assert text.startswith("\nSuccess:\npricecatcher_2022-01.parquet " + urls[0] + "\n")
    assert f"\ntestfile.txt {results.success[5].url}\n\nErrors:\n({error.url},\nNetworkError(" in text
    assert servers.sftp_password not in text and ":bob@" not in text


def test_print_format_and_results_types(servers, tmp_path, quiet_session):
    servers.write("fmt/a.txt", b"a")
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.http("fmt/a.txt"), path=tmp_path)
    dl.enqueue_file(servers.http("fmt/missing.txt"), path=tmp_path)
    results = dl.download()
    assert isinstance(results, Results) and isinstance(results, UserList)
    assert list(results) == [str(tmp_path / "a.txt")]
    assert results.urls == [servers.http("fmt/a.txt")]
    ok = results.success[0]
    assert (ok.path, ok.url) == (str(tmp_path / "a.txt"), servers.http("fmt/a.txt"))
    err = results.errors[0]
    assert err._fields == ("filepath_partial", "url", "exception")
    assert err.filepath_partial == str(tmp_path / "missing.txt")
    e = err.exception
    assert isinstance(e, exc.HTTPNotFoundError) and isinstance(e, exc.NotFoundError)
    assert isinstance(e, FileNotFoundError) and isinstance(e, exc.PymatrisError)
    assert (e.status, e.kind, e.retryable, e.url) == (404, "NotFound", False, servers.http("fmt/missing.txt"))
    assert str(results) == (
        f"\nSuccess:\n{tmp_path / 'a.txt'} {servers.http('fmt/a.txt')}\n"
        f"\nErrors:\n({servers.http('fmt/missing.txt')},\n{e!r})\n"
    )
    assert repr(e) == "HTTPNotFoundError('not found: HTTP 404 Not Found')"


def test_session_config_defaults(monkeypatch):
    monkeypatch.delenv("PYMATRIS_DEBUG", raising=False)
    monkeypatch.delenv("PYMATRIS_ACCEPT_NEW_HOST_KEYS", raising=False)
    c = SessionConfig()
    assert c.headers == {"User-Agent": f"pymatris/{pymatris.__version__}"}
    assert c.file_progress is True and c.log_level is None and c.chunksize == 1024
    assert c.accept_new_host_keys is False and c.known_hosts is None
    monkeypatch.setenv("PYMATRIS_DEBUG", "1")
    assert SessionConfig().log_level == logging.DEBUG
    assert logging.getLogger("pymatris").level == logging.DEBUG
    logging.getLogger("pymatris").setLevel(logging.NOTSET)
    monkeypatch.setenv("PYMATRIS_ACCEPT_NEW_HOST_KEYS", "1")
    monkeypatch.setenv("PYMATRIS_KNOWN_HOSTS", "/x/known_hosts")
    c = SessionConfig()
    assert c.accept_new_host_keys is True and c.known_hosts == "/x/known_hosts"
    with pytest.raises(ValueError):
        SessionConfig(max_speed=0)


def test_session_config_is_a_dataclass():
    """SessionConfig stays a dataclass for the tools that work on one,
    although the package builds it without importing dataclasses."""
    import dataclasses
    import inspect

    c = SessionConfig(file_progress=False, max_speed=1000)
    assert dataclasses.is_dataclass(SessionConfig) and dataclasses.is_dataclass(c)
    names = [f.name for f in dataclasses.fields(c)]
    assert names[:5] == ["headers", "chunksize", "file_progress", "timeouts", "log_level"]
    assert names == list(inspect.signature(SessionConfig).parameters)
    assert dataclasses.asdict(c)["max_speed"] == 1000
    d = dataclasses.replace(c, max_speed=2000)
    assert (d.max_speed, d.file_progress, d.headers) == (2000, False, c.headers)
    assert d != c and dataclasses.replace(d, max_speed=1000) == c
    # Each instance gets its own headers, as with field(default_factory=...).
    assert SessionConfig().headers is not SessionConfig().headers
    assert repr(c).startswith("SessionConfig(headers={'User-Agent': 'pymatris/")
    with pytest.raises(ValueError):
        dataclasses.replace(c, max_speed=0)

    @dataclasses.dataclass
    class Mine(SessionConfig):
        extra: int = 3

    m = Mine(max_speed=5)
    assert (m.extra, m.max_speed, m.headers, m.accept_new_host_keys) == (3, 5, c.headers, False)
    assert [f.name for f in dataclasses.fields(m)] == [*names, "extra"]


def test_downloader_config_reads_back():
    dl = Downloader(max_parallel=3, max_splits=2, max_tries=4, all_progress=False, overwrite=True,
                    session_config=SessionConfig(chunksize=4096, timeouts=7))
    c = dl.config
    assert (c.max_parallel, c.max_splits, c.max_tries, c.all_progress, c.overwrite) == (3, 2, 4, False, True)
    assert (c.chunksize, c.timeouts) == (4096, 7)
    assert dl.queued_downloads == 0
    dl.enqueue_file("http://127.0.0.1:1/a")
    dl.enqueue_file("sftp://h/b", path="x")
    assert dl.queued_downloads == 2
    with pytest.raises(ValueError):
        Downloader(max_parallel=0)
    with pytest.raises(TypeError):
        Downloader(max_splits="5")


def test_enqueue_refuses_bad_schemes_and_keywords():
    dl = Downloader()
    with pytest.raises(ValueError, match="gopher"):
        dl.enqueue_file("gopher://example.org/x")
    with pytest.raises(ValueError):
        dl.enqueue_file("example.org/x")
    with pytest.raises(TypeError, match="'timeout'"):
        dl.enqueue_file("https://example.org/x", timeout=3)
    with pytest.raises(ValueError):
        dl.enqueue_file("https://example.org/x", checksum="md5:abc")
    with pytest.raises(ValueError, match="header name"):
        dl.enqueue_file("https://example.org/x", headers={"Bad Name": "v"})
    with pytest.raises(ValueError, match="value"):
        dl.enqueue_file("https://example.org/x", headers={"X-A": "v\r\nX-Injected: 1"})
    with pytest.raises(ValueError):
        SessionConfig(headers={"": "v"})
    assert dl.queued_downloads == 0


def test_path_is_made_at_download_time_and_filename_overrides(servers, tmp_path, quiet_session):
    servers.write("names/orig.txt", b"x")
    target = tmp_path / "a" / "b"
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.ftp("names/orig.txt"), path=target, filename="renamed.txt")
    assert not target.exists()
    results = dl.download()
    assert list(results) == [str(target / "renamed.txt")]
    assert (target / "renamed.txt").read_bytes() == b"x"


def test_overwrite_downloader_wide_and_per_file(servers, tmp_path, quiet_session):
    servers.write("ow/f.txt", b"new")
    (tmp_path / "f.txt").write_bytes(b"old")
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.http("ow/f.txt"), path=tmp_path)
    assert list(dl.download()) == [str(tmp_path / "f.1.txt")]
    assert (tmp_path / "f.txt").read_bytes() == b"old"
    dl.enqueue_file(servers.http("ow/f.txt"), path=tmp_path, overwrite=True)
    assert list(dl.download()) == [str(tmp_path / "f.txt")]
    assert (tmp_path / "f.txt").read_bytes() == b"new"
    (tmp_path / "f.txt").write_bytes(b"old")
    dl = Downloader(overwrite=True, session_config=quiet_session(servers))
    dl.enqueue_file(servers.http("ow/f.txt"), path=tmp_path)
    dl.download()
    assert (tmp_path / "f.txt").read_bytes() == b"new"


def test_checksum(servers, tmp_path, quiet_session):
    body = servers.write("sum/c.bin", os.urandom(10_000))
    good = hashlib.sha256(body).hexdigest()
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.sftp("sum/c.bin"), path=tmp_path / "good", checksum=f"sha256:{good}")
    dl.enqueue_file(servers.sftp("sum/c.bin"), path=tmp_path / "bad", checksum="sha256:" + "0" * 64)
    results = dl.download()
    assert list(results) == [str(tmp_path / "good" / "c.bin")]
    (err,) = results.errors
    assert isinstance(err.exception, exc.ChecksumError)
    assert not (tmp_path / "bad" / "c.bin").exists()


def test_mirrors_serve_a_file_whose_first_url_is_busy(servers, recorder, tmp_path, quiet_session):
    body = servers.write("mirrored/m.bin", os.urandom(200_000))
    recorder.routes["/m.bin"] = lambda: (503, b"busy")
    dl = Downloader(max_tries=5, session_config=quiet_session(servers))
    dl.enqueue_file(recorder.url("/m.bin"), path=tmp_path, mirrors=[servers.ftp("mirrored/m.bin")])
    results = dl.download()
    assert list(results) == [str(tmp_path / "m.bin")], results.errors
    assert (tmp_path / "m.bin").read_bytes() == body
    # The mirror is asked at once rather than the busy server retried.
    assert len(recorder.hits("/m.bin")) == 1
    with pytest.raises(TypeError, match="mirrors"):
        dl.enqueue_file(recorder.url("/m.bin"), mirrors=servers.ftp("mirrored/m.bin"))
    with pytest.raises(TypeError, match="mirrors"):
        dl.enqueue_file(recorder.url("/m.bin"), mirrors=[1])


def test_per_file_headers_max_tries_and_no_retry_of_404(recorder, tmp_path, quiet_session):
    recorder.routes["/ok"] = lambda: (200, b"ok")
    recorder.routes["/busy"] = lambda: (503, b"busy")
    dl = Downloader(max_tries=3, session_config=quiet_session(headers={"X-Session": "s", "X-Both": "session"}))
    dl.enqueue_file(recorder.url("/ok"), path=tmp_path, headers={"X-Both": "file", "Authorization": "Bearer t0ken"})
    dl.enqueue_file(recorder.url("/busy"), path=tmp_path, max_tries=2)
    dl.enqueue_file(recorder.url("/busy?again"), path=tmp_path)
    dl.enqueue_file(recorder.url("/missing"), path=tmp_path, max_splits=1)
    recorder.routes["/busy?again"] = lambda: (503, b"busy")
    results = dl.download()
    (ok,) = recorder.hits("/ok")
    assert (ok["x-session"], ok["x-both"], ok["authorization"]) == ("s", "file", "Bearer t0ken")
    assert ok["user-agent"] == f"pymatris/{pymatris.__version__}"
    assert len(recorder.hits("/busy")) == 2
    assert len(recorder.hits("/busy?again")) == 3
    assert len(recorder.hits("/missing")) == 1, "a 404 is not retried"
    assert "x-both" in recorder.hits("/missing")[0] and recorder.hits("/missing")[0]["x-both"] == "session"
    # Results keep the order of enqueueing across per-file settings.
    assert [e.url for e in results.errors] == [recorder.url(p) for p in ("/busy", "/busy?again", "/missing")]
    busy = results.errors[0].exception
    assert isinstance(busy, exc.HTTPError) and busy.status == 503 and busy.retryable


def test_sftp_host_keys_are_checked(servers, tmp_path, quiet_session, monkeypatch):
    monkeypatch.delenv("PYMATRIS_ACCEPT_NEW_HOST_KEYS", raising=False)
    servers.write("hk/h.txt", b"h")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    dl = Downloader(session_config=quiet_session(servers, known_hosts=empty))
    dl.enqueue_file(servers.sftp("hk/h.txt"), path=tmp_path / "1")
    (err,) = dl.download().errors
    assert isinstance(err.exception, exc.HostKeyError) and err.exception.kind == "HostKey"
    monkeypatch.setenv("PYMATRIS_ACCEPT_NEW_HOST_KEYS", "1")
    dl = Downloader(session_config=quiet_session(servers, known_hosts=empty))
    dl.enqueue_file(servers.sftp("hk/h.txt"), path=tmp_path / "2")
    assert list(dl.download()) == [str(tmp_path / "2" / "h.txt")]
    assert "ssh-" in empty.read_text() or "ecdsa" in empty.read_text()


def test_ftp_not_found_is_a_not_found_error(servers, tmp_path, quiet_session):
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.ftp("nope/none.txt"), path=tmp_path)
    (err,) = dl.download().errors
    assert isinstance(err.exception, exc.NotFoundError) and not isinstance(err.exception, exc.HTTPError)
    assert servers.ftp_password not in err.url and ":***@" in err.url


def test_the_downloader_downloads_again(servers, tmp_path, quiet_session):
    servers.write("again/1.txt", b"1")
    servers.write("again/2.txt", b"2")
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.http("again/1.txt"), path=tmp_path)
    assert len(dl.download()) == 1 and dl.queued_downloads == 0
    dl.enqueue_file(servers.https("again/2.txt"), path=tmp_path)
    assert list(dl.download()) == [str(tmp_path / "2.txt")]


def test_engine_logs_reach_the_pymatris_logger_without_passwords(servers, tmp_path, quiet_session, caplog):
    servers.write("log/l.txt", b"l")
    caplog.set_level(logging.DEBUG, logger="pymatris")
    dl = Downloader(session_config=quiet_session(servers))
    dl.enqueue_file(servers.sftp("log/l.txt"), path=tmp_path)
    dl.enqueue_file(servers.ftp("log/l.txt"), path=tmp_path / "f")
    assert len(dl.download()) == 2
    records = [r for r in caplog.records if r.name == "pymatris"]
    assert records, "no engine event reached the logger"
    text = "\n".join(r.getMessage() for r in records)
    assert servers.sftp_password not in text and servers.ftp_password not in text


class FakeBar:
    made: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.updates, self.closed = kwargs, [], False
        FakeBar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


def test_progress_bars_through_dl_tqdm(servers, tmp_path, quiet_session):
    body = servers.write("bars/big.bin", os.urandom(1 << 20))
    servers.write("bars/small.txt", b"s")
    FakeBar.made = []
    dl = Downloader(session_config=quiet_session(servers, file_progress=True, max_speed=400_000))
    dl.tqdm = FakeBar
    dl.enqueue_file(servers.http("bars/big.bin"), path=tmp_path)
    dl.enqueue_file(servers.http("bars/small.txt"), path=tmp_path)
    started = time.monotonic()
    assert len(dl.download()) == 2
    elapsed = time.monotonic() - started
    overall, *files = FakeBar.made
    assert overall.kwargs["desc"] == "Files Downloaded" and overall.kwargs["total"] == 2
    assert sum(overall.updates) == 2 and overall.closed
    big = next(b for b in files if b.kwargs["desc"] == "big.bin")
    assert big.kwargs["total"] == len(body) and sum(big.updates) == len(body) and big.closed
    # About 2.5 s at 400 kB/s: several updates, at most ten a second (plus
    # the last), not one per write.
    assert 2 <= len(big.updates) <= 10 * elapsed + 2
    FakeBar.made = []
    dl = Downloader(session_config=quiet_session(servers, file_progress=False))
    dl.tqdm = FakeBar
    dl.enqueue_file(servers.http("bars/small.txt"), path=tmp_path)
    dl.download()
    assert [b.kwargs["desc"] for b in FakeBar.made] == ["Files Downloaded"]
    FakeBar.made = []
    dl = Downloader(all_progress=False, session_config=quiet_session(servers, file_progress=True))
    dl.tqdm = FakeBar
    dl.enqueue_file(servers.http("bars/small.txt"), path=tmp_path)
    dl.download()
    assert FakeBar.made == []


def test_the_default_bars_are_tqdm(servers, tmp_path, quiet_session):
    from tqdm.auto import tqdm

    servers.write("bars/t.txt", b"t")
    dl = Downloader(session_config=quiet_session(servers, file_progress=True))
    assert dl.tqdm is tqdm
    dl.enqueue_file(servers.http("bars/t.txt"), path=tmp_path)
    assert len(dl.download()) == 1


def _shard_by_hand(url, n):
    # docs/scaling.md's formula: the first 8 bytes of SHA-256, modulo n.
    return int(hashlib.sha256(url.encode()).hexdigest()[:16], 16) % n


def test_shards_split_a_list_as_the_command_does(servers, tmp_path, quiet_session):
    urls = [servers.http(f"shard/f{i:02}.bin") for i in range(30)]
    for i, url in enumerate(urls):
        servers.write(f"shard/f{i:02}.bin", bytes([i]) * (1000 + i))
    n = 3
    got = []
    for i in range(n):
        dl = Downloader(shard=(i, n), session_config=quiet_session(servers))
        for url in urls:
            dl.enqueue_file(url, path=tmp_path / "out")
        assert dl.queued_downloads == sum(_shard_by_hand(u, n) == i for u in urls)
        results = dl.download()
        assert not results.errors
        got.extend(results.urls)
    # Every URL once, in the shard the published formula gives.
    assert sorted(got) == sorted(urls)
    for i, url in enumerate(urls):
        saved = tmp_path / "out" / f"f{i:02}.bin"
        assert saved.read_bytes() == bytes([i]) * (1000 + i)
    # The engine's function, pinned (crates/core/src/shard.rs pins the same).
    assert pymatris._native.shard_of("https://example.org/a", 1000) == 180


def test_bad_shards_are_refused():
    for bad in [(3, 3), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError):
            Downloader(shard=bad)
    for bad in [3, (1,), ("0", 2), (0.0, 2), (True, 2)]:
        with pytest.raises(TypeError):
            Downloader(shard=bad)
