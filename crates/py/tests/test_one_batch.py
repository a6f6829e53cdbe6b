"""Files with settings of their own (``max_splits``, ``max_tries``,
``headers``, ``overwrite``) download in one batch with the others, at the
same time, not one group of settings after another."""

from __future__ import annotations

import os
import time

from pymatris import Downloader


class TimedBar:
    """A progress bar that notes when it opened and closed."""

    made: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.opened, self.closed = time.monotonic(), None
        TimedBar.made.append(self)

    def update(self, n):
        pass

    def close(self):
        self.closed = time.monotonic()


def test_files_with_their_own_settings_download_together(servers, tmp_path, quiet_session):
    bodies = {name: servers.write(f"together/{name}", os.urandom(400_000)) for name in ("a.bin", "b.bin", "c.bin")}
    (tmp_path / "c.bin").write_bytes(b"old")
    TimedBar.made = []
    # The speed cap makes each file take a while, so that files downloaded
    # one after the other could not overlap.
    session = quiet_session(servers, file_progress=True, max_speed=600_000)
    dl = Downloader(max_parallel=3, session_config=session)
    dl.tqdm = TimedBar
    dl.enqueue_file(servers.http("together/a.bin"), path=tmp_path, max_splits=1)
    dl.enqueue_file(servers.http("together/b.bin"), path=tmp_path, max_tries=2, headers={"X-File": "b"})
    dl.enqueue_file(servers.http("together/c.bin"), path=tmp_path, overwrite=True)
    results = dl.download()
    assert not results.errors, results
    assert list(results) == [str(tmp_path / name) for name in ("a.bin", "b.bin", "c.bin")]
    for name, body in bodies.items():
        assert (tmp_path / name).read_bytes() == body
    bars = {b.kwargs["desc"]: b for b in TimedBar.made if b.kwargs.get("desc") in bodies}
    assert sorted(bars) == sorted(bodies), [b.kwargs for b in TimedBar.made]
    # Every file started before any other finished.
    last_start = max(b.opened for b in bars.values())
    first_end = min(b.closed for b in bars.values())
    assert last_start < first_end, {k: (b.opened, b.closed) for k, b in bars.items()}
