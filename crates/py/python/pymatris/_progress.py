"""Progress bars like pymatris 0.0.10's: an overall "Files Downloaded" bar
and one bar per running file, drawn with ``Downloader.tqdm``.

The engine's events arrive in batches, at most ten times a second, on the
thread that waits for the download; each bar is updated at most once per
batch, and nothing here runs between batches.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional


class Bars:
    def __init__(
        self, tqdm: Callable[..., Any], *, total: int, file_progress: bool, max_parallel: int
    ) -> None:
        self._tqdm = tqdm
        self._file_progress = file_progress
        self._main: Optional[Any] = tqdm(total=total, unit="file", desc="Files Downloaded", position=0)
        self._main_done = 0
        # Each running file's bar, its position and the bytes it shows.
        self._files: Dict[int, List[Any]] = {}
        # Positions under the overall bar, reused as files finish.
        self._free: List[int] = []
        self._next_position = 1

    def on_events(self, events: List[tuple]) -> None:
        for event in events:
            what = event[0]
            if what == "start":
                _, id_, _url, name, size = event
                if self._file_progress:
                    position = self._position()
                    bar = self._tqdm(
                        total=size,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=name,
                        leave=False,
                        position=position,
                    )
                    self._files[id_] = [bar, position, 0]
            elif what == "progress":
                _, id_, done = event
                entry = self._files.get(id_)
                if entry is not None:
                    entry[0].update(done - entry[2])
                    entry[2] = done
            elif what == "finish":
                _, id_, _error = event
                entry = self._files.pop(id_, None)
                if entry is not None:
                    entry[0].close()
                    self._free.append(entry[1])
                if self._main is not None:
                    self._main.update(1)
                    self._main_done += 1

    def _position(self) -> int:
        if self._free:
            self._free.sort()
            return self._free.pop(0)
        position = self._next_position
        self._next_position += 1
        return position

    def finish(self, done: int) -> None:
        """Counts the files that failed before their transfer started
        (they sent no event), so the overall bar ends at its total."""
        if self._main is not None and done > self._main_done:
            self._main.update(done - self._main_done)
            self._main_done = done

    def close(self) -> None:
        for entry in self._files.values():
            entry[0].close()
        self._files.clear()
        if self._main is not None:
            self._main.close()
            self._main = None
