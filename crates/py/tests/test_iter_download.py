"""``Downloader.iter_download()`` (issue 18): each file's result as soon
as it is done, a bounded number waiting for the loop, an early exit or
Ctrl-C cancelling the rest cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from pymatris import Downloader, exceptions as exc
from pymatris.results import Error, Success

# 4 MiB at 256 KiB/s: about 16 s, far more than any test waits.
SLOW = 1 << 22
RATE = 256 * 1024


class FakeBar:
    made: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.updates, self.closed = kwargs, [], False
        FakeBar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


def test_each_result_is_a_success_or_error_tuple(servers, tmp_path, quiet_session):
    for i in range(20):
        servers.write(f"iter/{i}.txt", str(i).encode())
    dl = Downloader(session_config=quiet_session(servers), all_progress=False)
    for i in range(20):
        dl.enqueue_file(servers.http(f"iter/{i}.txt"), path=tmp_path)
    dl.enqueue_file(servers.http("iter/missing.txt"), path=tmp_path)
    results = dl.iter_download()
    # The queue is emptied by the call, not by the first step of the loop.
    assert dl.queued_downloads == 0
    seen = list(results)
    assert len(seen) == 21
    ok = [r for r in seen if isinstance(r, Success)]
    errors = [r for r in seen if isinstance(r, Error)]
    assert sorted(r.url for r in ok) == sorted(servers.http(f"iter/{i}.txt") for i in range(20))
    for r in ok:
        assert r.path == str(tmp_path / os.path.basename(r.path))
        with open(r.path, "rb") as f:
            assert f.read() == os.path.basename(r.path).split(".")[0].encode()
    assert [e.url for e in errors] == [servers.http("iter/missing.txt")]
    assert isinstance(errors[0].exception, exc.NotFoundError)
    assert errors[0].filepath_partial == str(tmp_path / "missing.txt")


def test_a_result_comes_while_other_files_still_download(servers, tmp_path, quiet_session):
    servers.write("iter/quick.txt", b"quick")
    slow = servers.write("iter/slow.bin", os.urandom(1 << 20))
    dl = Downloader(session_config=quiet_session(servers, max_speed=RATE), all_progress=False)
    dl.enqueue_file(servers.http("iter/slow.bin"), path=tmp_path)
    dl.enqueue_file(servers.http("iter/quick.txt"), path=tmp_path)
    results = dl.iter_download()
    first = next(results)
    assert first == Success(str(tmp_path / "quick.txt"), servers.http("iter/quick.txt"))
    # The slow file (about 4 s at this speed) is not done yet.
    assert not (tmp_path / "slow.bin").exists()
    rest = list(results)
    assert rest == [Success(str(tmp_path / "slow.bin"), servers.http("iter/slow.bin"))]
    assert (tmp_path / "slow.bin").read_bytes() == slow


def test_results_wait_for_the_loop_in_bounded_number(servers, tmp_path, quiet_session):
    count = 400
    for i in range(count):
        servers.write(f"iter/many/{i}.txt", b"x")
    dl = Downloader(max_parallel=4, session_config=quiet_session(servers), all_progress=False)
    for i in range(count):
        dl.enqueue_file(servers.http(f"iter/many/{i}.txt"), path=tmp_path)
    results = dl.iter_download()
    next(results)
    # A loop busy with its first result: the engine stops taking files
    # once max_parallel plus 64 results wait for it.
    time.sleep(2)
    on_disk = len(os.listdir(tmp_path))
    assert on_disk <= 1 + 4 + 64, on_disk
    assert len(list(results)) == count - 1
    assert len(os.listdir(tmp_path)) == count


def test_leaving_the_loop_early_cancels_the_rest(servers, tmp_path, quiet_session):
    servers.write("iter/first.txt", b"first")
    urls = [servers.http("iter/first.txt")]
    for i in range(3):
        servers.write(f"iter/slow-{i}.bin", os.urandom(SLOW))
        urls.append(servers.http(f"iter/slow-{i}.bin"))
    dl = Downloader(max_parallel=4, session_config=quiet_session(servers, max_speed=RATE), all_progress=False)
    for url in urls:
        dl.enqueue_file(url, path=tmp_path)
    started = time.monotonic()
    for result in dl.iter_download():
        assert result.url == urls[0]
        break
    # The generator is closed as the loop ends: the slow files (16 s each)
    # are cancelled and their partial files removed before this line.
    assert time.monotonic() - started < 10
    assert sorted(os.listdir(tmp_path)) == ["first.txt"]
    # The Downloader downloads again.
    dl.enqueue_file(urls[0], path=tmp_path / "again")
    assert list(dl.iter_download()) == [Success(str(tmp_path / "again" / "first.txt"), urls[0])]


def test_progress_bars_as_download(servers, tmp_path, quiet_session):
    for i in range(3):
        servers.write(f"iter/bars/{i}.txt", b"bar")
    FakeBar.made = []
    dl = Downloader(session_config=quiet_session(servers, file_progress=True))
    dl.tqdm = FakeBar
    for i in range(3):
        dl.enqueue_file(servers.http(f"iter/bars/{i}.txt"), path=tmp_path)
    dl.enqueue_file(servers.http("iter/bars/missing.txt"), path=tmp_path)
    assert len(list(dl.iter_download())) == 4
    overall, *files = FakeBar.made
    assert overall.kwargs["desc"] == "Files Downloaded" and overall.kwargs["total"] == 4
    assert sum(overall.updates) == 4 and overall.closed
    assert sorted(b.kwargs["desc"] for b in files) == ["0.txt", "1.txt", "2.txt"]
    assert all(b.closed and sum(b.updates) == 3 for b in files)


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pymatris import Downloader, SessionConfig
    quick, slow, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    dl = Downloader(session_config=SessionConfig(max_speed=262144, resume=resume, file_progress=False),
                    all_progress=False)
    dl.enqueue_file(quick, path=out)
    dl.enqueue_file(slow, path=out)
    try:
        for result in dl.iter_download():
            print("got", os.path.basename(result.path), flush=True)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", sorted(os.listdir(out)), flush=True)
    """
)


def _ctrl_c(servers, tmp_path, resume):
    servers.write("iter/ctrl-c.txt", b"quick")
    servers.write("iter/ctrl-c.bin", os.urandom(SLOW))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CTRL_C_SCRIPT,
            servers.http("iter/ctrl-c.txt"),
            servers.http("iter/ctrl-c.bin"),
            str(out),
            "1" if resume else "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    # Waiting for the slow file, in the iterator's wait.
    assert proc.stdout.readline().strip() == "got ctrl-c.txt"
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, stdout
    return stdout.splitlines()


def test_ctrl_c_raises_keyboard_interrupt_and_removes_partials(servers, tmp_path):
    assert _ctrl_c(servers, tmp_path, resume=False) == ["interrupted ['ctrl-c.txt']"]


def test_ctrl_c_with_resume_keeps_the_part(servers, tmp_path):
    assert _ctrl_c(servers, tmp_path, resume=True) == [
        "interrupted ['ctrl-c.bin.pymatris-part', 'ctrl-c.bin.pymatris-part.state', 'ctrl-c.txt']"
    ]
