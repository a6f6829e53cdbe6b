"""``Downloader``: pymatris 0.0.10's API over the Rust engine."""

from __future__ import annotations

import os

from . import _native
from .config import DownloaderConfig, SessionConfig, _check_count, _check_headers
from .exceptions import _from_engine
from .results import Results

# typing only for type checkers: the import is a cost (see _dataclass.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

    from .results import Error, Success

__all__ = ["Downloader"]

# The keywords `enqueue_file` takes besides its own.
_FILE_OPTIONS = ("max_splits", "max_tries", "headers", "checksum", "mirrors")


class Downloader:
    """Downloads files in parallel over HTTP(S), FTP(S) and SFTP.

    ``max_parallel`` files at once, each in up to ``max_splits`` parts,
    each part tried up to ``max_tries`` times in a row without progress.
    ``all_progress=False`` shows no progress bar; ``overwrite=True``
    replaces existing files (otherwise a new name is chosen).

    ``shard=(i, n)`` keeps only the URLs of shard ``i`` (from 0) of ``n``,
    for job arrays and clusters: ``enqueue_file`` drops the others. A URL's
    shard depends on the URL alone, as with the command's ``--shard``
    (the first 8 bytes of its SHA-256, modulo ``n``).
    """

    def __init__(
        self,
        max_parallel: int = 5,
        max_splits: int = 5,
        max_tries: int = 5,
        all_progress: bool = True,
        overwrite: bool = False,
        session_config: Optional[SessionConfig] = None,
        shard: Optional[Tuple[int, int]] = None,
    ) -> None:
        self.shard = _check_shard(shard)
        self.config = DownloaderConfig(
            max_parallel=max_parallel,
            max_splits=max_splits,
            max_tries=max_tries,
            all_progress=all_progress,
            overwrite=overwrite,
            config=session_config if session_config is not None else SessionConfig(),
        )
        self._queue: List[Dict[str, Any]] = []
        self._tqdm: Optional[Callable[..., Any]] = None

    @property
    def tqdm(self) -> Callable[..., Any]:
        """The progress bar class (``tqdm.auto.tqdm``: terminals and
        notebooks); replace it to draw bars another way."""
        if self._tqdm is None:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
        return self._tqdm

    @tqdm.setter
    def tqdm(self, value: Callable[..., Any]) -> None:
        self._tqdm = value

    @property
    def queued_downloads(self) -> int:
        """How many files wait for the next ``download()``."""
        return len(self._queue)

    def enqueue_file(
        self,
        url: str,
        path: Optional[os.PathLike[str] | str] = None,
        filename: Optional[str] = None,
        overwrite: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        """Queues ``url``, to be saved in the directory ``path`` (default:
        the current one; created when the download starts) under
        ``filename`` (default: the name the server or URL gives, made
        safe). ``overwrite`` overrides the Downloader's for this file.

        Keywords: ``max_splits``, ``max_tries`` (this file's own),
        ``headers`` (a dict of extra HTTP headers for this file),
        ``checksum`` (``"sha256:<hex>"``: a file that does not match fails
        and is not kept), ``mirrors`` (a list of other URLs of the same
        file, any scheme: its parts are spread over them, and a URL that
        fails or serves another version is left for the others). An
        unsupported scheme raises ``ValueError``; an unknown keyword
        ``TypeError``.
        """
        unknown = [k for k in kwargs if k not in _FILE_OPTIONS]
        if unknown:
            raise TypeError(f"enqueue_file() got an unexpected keyword argument '{unknown[0]}'")
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in _schemes():
            shown = scheme or url
            raise ValueError(
                f"unsupported URL scheme {shown!r} (pymatris downloads {', '.join(_schemes())})"
            )
        if self.shard is not None and _native.shard_of(url, self.shard[1]) != self.shard[0]:
            return
        item: Dict[str, Any] = {
            "url": url,
            "dir": os.fspath(path) if path is not None else ".",
            "filename": None if filename is None else str(filename),
            "overwrite": None if overwrite is None else bool(overwrite),
        }
        for name in ("max_splits", "max_tries"):
            if kwargs.get(name) is not None:
                _check_count(name, kwargs[name])
                item[name] = kwargs[name]
        if kwargs.get("headers"):
            item["headers"] = _check_headers(kwargs["headers"])
        mirrors = kwargs.get("mirrors")
        if mirrors is not None:
            if isinstance(mirrors, (str, bytes)) or not all(isinstance(m, str) for m in mirrors):
                raise TypeError("mirrors must be a list of URL strings")
            item["mirrors"] = list(mirrors)
        checksum = kwargs.get("checksum")
        if checksum is not None:
            algo, sep, hexdigest = str(checksum).partition(":")
            if not sep or algo.lower() != "sha256" or len(hexdigest) != 64 or not _is_hex(hexdigest):
                raise ValueError(f"checksum must be 'sha256:<64 hex digits>', not {checksum!r}")
            item["sha256"] = hexdigest
        self._queue.append(item)

    def _job(self) -> Tuple[Any, Optional[Any]]:
        """Empties the queue into an engine job, with its progress bars."""
        job, count = self._queued_job()
        return job, self._bars(count)

    def _queued_job(self) -> Tuple[Any, int]:
        """Empties the queue into an engine job; returns it and its length."""
        queue, self._queue = self._queue, []
        cfg = self.config
        job = _native.Job(
            max_parallel=cfg.max_parallel,
            max_splits=cfg.max_splits,
            max_tries=cfg.max_tries,
            overwrite=bool(cfg.overwrite),
            **cfg.config._engine(),
        )
        for item in queue:
            job.add(item.pop("url"), item.pop("dir"), **item)
        return job, len(queue)

    def _bars(self, count: int) -> Optional[Any]:
        """The progress bars of a job of ``count`` files, if shown."""
        cfg = self.config
        if not cfg.all_progress or not count:
            return None
        from ._progress import Bars

        return Bars(
            self.tqdm,
            total=count,
            file_progress=bool(cfg.config.file_progress),
            max_parallel=cfg.max_parallel,
        )

    @staticmethod
    def _run(job: Any, bars: Optional[Any]) -> Results:
        try:
            outcomes = job.run(bars.on_events if bars is not None else None)
            if bars is not None:
                bars.finish(len(outcomes))
        finally:
            if bars is not None:
                bars.close()
        results = Results()
        for _index, path, url, error in outcomes:
            path = os.path.normpath(path) if path else path
            if error is None:
                results._add_success(path, url)
            else:
                kind, retryable, message, chain = error
                results._add_error(path, url, _from_engine(url, kind, retryable, message, chain))
        return results

    def iter_download(self) -> Iterator[Union[Success, Error]]:
        """Downloads every queued file and empties the queue (at this call),
        yielding each file's result as soon as it is done, in the order
        they finish: a ``Success`` or ``Error`` tuple, as in ``Results``.
        The files download as with ``download()`` (the same parallelism
        and progress bars), and only a bounded number of results wait for
        the loop, however long the queue. Leaving the loop early (or
        Ctrl-C, raised as ``KeyboardInterrupt``) cancels the files left,
        removes their partial files (keeps them with
        ``SessionConfig(resume=True)``) and returns once they are cleaned
        up."""
        job, count = self._queued_job()
        return self._iterate(job, count)

    def _iterate(self, job: Any, count: int) -> Iterator[Union[Success, Error]]:
        from .results import Error, Success

        bars = self._bars(count)
        outcomes = None
        try:
            outcomes = job.iter(bars.on_events if bars is not None else None)
            done = 0
            for _index, path, url, error in outcomes:
                done += 1
                path = os.path.normpath(path) if path else path
                if error is None:
                    yield Success(path, url)
                else:
                    kind, retryable, message, chain = error
                    yield Error(path, url, _from_engine(url, kind, retryable, message, chain))
            if bars is not None:
                bars.finish(done)
        finally:
            # A loop left early (break, an exception, the generator
            # collected) cancels the rest and waits for its cleanup.
            if outcomes is not None:
                outcomes.close()
            if bars is not None:
                bars.close()

    def download(self) -> Results:
        """Downloads every queued file and empties the queue; blocks until
        done, without holding the GIL. Works inside a running event loop
        (Jupyter) too. Ctrl-C stops the transfers, removes their partial
        files (keeps them with ``SessionConfig(resume=True)``) and raises
        ``KeyboardInterrupt``; the Downloader stays usable."""
        job, bars = self._job()
        return self._run(job, bars)

    async def run_download(self) -> Results:
        """``download()`` as a coroutine: the transfers run on a worker
        thread and the event loop stays free. Cancelling the task cancels
        the transfers."""
        import asyncio

        job, bars = self._job()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._run, job, bars)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            job.cancel()
            try:
                await future
            except BaseException:  # noqa: BLE001 - the cancellation is what is raised
                pass
            raise


def _check_shard(shard: Any) -> Optional[Tuple[int, int]]:
    """``None``, or ``(i, n)`` with ``0 <= i < n``."""
    if shard is None:
        return None
    try:
        index, count = shard
    except (TypeError, ValueError):
        raise TypeError(f"shard must be a pair (i, n), not {shard!r}") from None
    for value in (index, count):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"shard must be a pair of ints (i, n), not {shard!r}")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard (i, n) needs 0 <= i < n, not {shard!r}")
    return (index, count)


_SCHEMES: Optional[List[str]] = None


def _schemes() -> List[str]:
    global _SCHEMES
    if _SCHEMES is None:
        _SCHEMES = list(_native.schemes())
    return _SCHEMES


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
