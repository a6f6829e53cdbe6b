"""What pymatris 0.0.10 got wrong or could not do: Ctrl-C, the GIL,
event loops, a light import."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from pymatris import Downloader

# 4 MiB at 256 KiB/s: about 16 s, far more than any test waits.
SLOW = 1 << 22
RATE = 256 * 1024


def _slow_file(servers, name):
    servers.write(f"slow/{name}", os.urandom(SLOW))
    return servers.http(f"slow/{name}")


def test_another_thread_runs_during_download(servers, tmp_path, quiet_session):
    """download() holds no GIL while it waits: a pure-Python thread keeps
    counting."""
    servers.write("gil/g.bin", os.urandom(600_000))
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    dl = Downloader(session_config=quiet_session(servers, max_speed=400_000))
    dl.enqueue_file(servers.http("gil/g.bin"), path=tmp_path)
    counter = threading.Thread(target=count)
    counter.start()
    started = time.monotonic()
    try:
        results = dl.download()
    finally:
        stop.set()
        counter.join()
    ended = time.monotonic()
    assert len(results) == 1
    during = [t for t in ticks if started < t < ended]
    # The download takes over a second; a thread starved of the GIL would
    # tick a handful of times at most.
    assert ended - started > 1.0
    assert len(during) > 20


def test_run_download_does_not_block_the_event_loop(servers, tmp_path, quiet_session):
    servers.write("aio/a.bin", os.urandom(600_000))
    dl = Downloader(session_config=quiet_session(servers, max_speed=400_000))
    dl.enqueue_file(servers.http("aio/a.bin"), path=tmp_path)
    ticks = []

    async def ticker(done):
        while not done.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        done = asyncio.Event()
        tick = asyncio.ensure_future(ticker(done))
        results = await dl.run_download()
        done.set()
        await tick
        return results

    results = asyncio.run(main())
    assert list(results) == [str(tmp_path / "a.bin")]
    assert len(ticks) > 20


def test_download_inside_a_running_loop(servers, tmp_path, quiet_session):
    """As in Jupyter, where a loop is always running."""
    servers.write("aio/b.txt", b"b")

    async def main():
        dl = Downloader(session_config=quiet_session(servers))
        dl.enqueue_file(servers.sftp("aio/b.txt"), path=tmp_path)
        return dl.download()

    assert list(asyncio.run(main())) == [str(tmp_path / "b.txt")]


def test_cancelling_run_download_cancels_the_transfers(servers, tmp_path, quiet_session):
    url = _slow_file(servers, "cancel.bin")
    dl = Downloader(session_config=quiet_session(servers, max_speed=RATE))
    dl.enqueue_file(url, path=tmp_path)

    async def main():
        task = asyncio.ensure_future(dl.run_download())
        await asyncio.sleep(1.0)
        task.cancel()
        started = time.monotonic()
        try:
            await task
        except asyncio.CancelledError:
            return time.monotonic() - started
        raise AssertionError("the task was not cancelled")

    assert asyncio.run(main()) < 10
    assert os.listdir(tmp_path) == []


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pymatris import Downloader, SessionConfig
    url, small, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    dl = Downloader(session_config=SessionConfig(max_speed=262144, resume=resume, file_progress=False),
                    all_progress=False)
    dl.enqueue_file(url, path=out)
    print("started", flush=True)
    try:
        dl.download()
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", sorted(os.listdir(out)), flush=True)
    dl.enqueue_file(small, path=out)
    print("again", list(dl.download()), flush=True)
    """
)


def _ctrl_c(servers, tmp_path, name, resume):
    url = _slow_file(servers, name)
    servers.write("slow/small.txt", b"small")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, url, servers.http("slow/small.txt"), str(out), "1" if resume else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, stdout
    lines = stdout.splitlines()
    assert lines[0].startswith("interrupted"), stdout
    assert lines[1] == f"again ['{out / 'small.txt'}']"
    return lines[0]


def test_ctrl_c_raises_keyboard_interrupt_and_leaves_nothing(servers, tmp_path):
    assert _ctrl_c(servers, tmp_path, "ctrl-c.bin", resume=False) == "interrupted []"


def test_ctrl_c_with_resume_keeps_the_part(servers, tmp_path):
    line = _ctrl_c(servers, tmp_path, "ctrl-c-resume.bin", resume=True)
    assert line == "interrupted ['ctrl-c-resume.bin.pymatris-part', 'ctrl-c-resume.bin.pymatris-part.state']"


# What `import pymatris` and a download without progress bars leave out:
# each costs a script several milliseconds of CPU before its first byte
# (dataclasses alone pulls in inspect, ast, dis and enum), which matters on
# runs of many small files. They are imported when something needs them:
# tqdm and asyncio by bars and run_download(), logging by a log level or
# an engine event worth logging, dataclasses by dataclasses.fields().
LAZY_ON_IMPORT = ("tqdm", "asyncio", "logging", "typing", "dataclasses", "inspect", "re")
LAZY_IN_DOWNLOAD = ("tqdm", "asyncio", "logging", "dataclasses", "inspect")


def _loaded(code, *args):
    """The modules of LAZY_ON_IMPORT that a fresh interpreter running
    `code` has loaded at its end, as a list."""
    code += f"\nimport sys; print(sorted(m for m in {LAZY_ON_IMPORT!r} if m in sys.modules))"
    env = {k: v for k, v in os.environ.items() if k != "PYMATRIS_DEBUG"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_import_is_light():
    """`import pymatris` (and the names a script takes from it) loads none
    of the modules above, so it stays well under 100 ms."""
    assert _loaded("import pymatris; from pymatris import Downloader, SessionConfig, Results") == []


def test_a_download_without_bars_stays_light(servers, tmp_path):
    """A download with the bars off, as a script for many small files
    would run it, imports none of the modules a plain download does not
    need: not tqdm, not asyncio, not logging (nobody configured it, and
    the engine logged nothing worth a warning)."""
    servers.write("light/a.txt", b"a")
    code = textwrap.dedent(
        """
        import sys
        from pymatris import Downloader, SessionConfig
        dl = Downloader(all_progress=False, session_config=SessionConfig(file_progress=False))
        dl.enqueue_file(sys.argv[1], path=sys.argv[2])
        assert list(dl.download()) and not dl.download().errors
        """
    )
    loaded = _loaded(code, servers.http("light/a.txt"), str(tmp_path))
    assert [m for m in LAZY_IN_DOWNLOAD if m in loaded] == [], loaded
