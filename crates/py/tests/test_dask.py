"""The Dask recipe of docs/scaling.md, run on this machine: a LocalCluster
of worker processes maps the shards of one list to workers, each calling
``Downloader(shard=(i, n))`` with ``resume=True``; one worker is killed
mid-run, and Dask's rerun of its shards must finish them with every file
byte-exact and no finished file fetched again (nginx's access log)."""

from __future__ import annotations

import collections
import os
import signal
import sys
import time

import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from pymatris import Downloader, SessionConfig  # noqa: E402

# Workers are other processes, which cannot import this test module: its
# functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FILES = 2000
SIZE = 8 << 10
SHARDS = 8
PARALLEL = 8


def fetch_shard(index, count, urls, out):
    """One Dask task: shard ``index`` of ``count`` of ``urls`` into ``out``
    (docs/scaling.md's recipe). Rerunnable: finished files are skipped,
    partial ones resumed."""
    dl = Downloader(
        max_parallel=PARALLEL,
        all_progress=False,
        shard=(index, count),
        # Throttled so that the test can kill a worker mid-run.
        session_config=SessionConfig(resume=True, file_progress=False, max_speed=1_500_000),
    )
    for url in urls:
        dl.enqueue_file(url, path=out)
    results = dl.download()
    return list(results.urls), [(e.url, str(e.exception)) for e in results.errors]


def _body(i):
    return (i.to_bytes(4, "big") * (SIZE // 4))[:SIZE]


def test_a_dask_cluster_downloads_a_list_and_survives_a_killed_worker(servers, tmp_path):
    from distributed import Client, LocalCluster

    urls = []
    for i in range(FILES):
        servers.write(f"dask/f{i:04}.bin", _body(i))
        urls.append(servers.http(f"dask/f{i:04}.bin"))
    out = str(tmp_path / "out")
    with LocalCluster(
        n_workers=3,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        futures = [
            client.submit(fetch_shard, i, SHARDS, urls, out, pure=False) for i in range(SHARDS)
        ]
        # Kill a worker once it is running a shard and files are arriving.
        deadline = time.monotonic() + 60
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "no shard started"
            busy = [a for a, keys in client.processing().items() if keys]
            if busy and os.path.isdir(out) and len(os.listdir(out)) > 50:
                victim = busy[0]
            else:
                time.sleep(0.1)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        done = client.gather(futures)

    fetched = [url for urls_ok, _ in done for url in urls_ok]
    errors = [e for _, errs in done for e in errs]
    assert errors == []
    assert sorted(fetched) == sorted(urls), "every URL once, by one shard"
    names = sorted(os.listdir(out))
    assert names == [f"f{i:04}.bin" for i in range(FILES)], names[:5]
    for i in range(FILES):
        with open(os.path.join(out, f"f{i:04}.bin"), "rb") as f:
            assert f.read() == _body(i), i

    # What nginx sent: no file fetched by two shards, and none fetched
    # again but those in flight when the worker died (PARALLEL at most).
    log = os.path.join(str(servers.info["root_dir"]), "nginx", "access.log")
    sent = collections.Counter()
    for line in open(log, encoding="utf-8", errors="replace"):
        parts = line.split('"')
        if len(parts) < 3:
            continue
        request = parts[1].split(" ")
        fields = parts[2].split()
        if len(request) < 2 or request[0] != "GET" or not request[1].startswith("/dask/"):
            continue
        sent[request[1]] += int(fields[1]) if fields[1].isdigit() else 0
    assert len(sent) == FILES
    again = [path for path, n in sent.items() if n > SIZE]
    assert len(again) <= PARALLEL, f"{len(again)} files fetched more than once: {again[:5]}"
    assert sum(sent.values()) <= FILES * SIZE + PARALLEL * SIZE
