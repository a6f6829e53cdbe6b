"""What ``Downloader.download()`` returns, as in pymatris 0.0.10."""

from __future__ import annotations

from collections import UserList, namedtuple

__all__ = ["Results", "Success", "Error"]

_SUCCESS_DOC = """A file that was downloaded: where it is, and its URL (no password)."""
_ERROR_DOC = """A URL that failed: where its file would have been, the URL (no
password) and why, as an exception of :mod:`pymatris.exceptions`."""

# typing.NamedTuple for type checkers; at run time the same tuples from
# collections.namedtuple, without importing typing (see _dataclass.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NamedTuple, Optional

    class Success(NamedTuple):
        path: str
        url: str

    class Error(NamedTuple):
        filepath_partial: str
        url: str
        exception: BaseException

else:
    Success = namedtuple("Success", ["path", "url"], module=__name__)
    Success.__doc__ = _SUCCESS_DOC
    Error = namedtuple("Error", ["filepath_partial", "url", "exception"], module=__name__)
    Error.__doc__ = _ERROR_DOC


class Results(UserList):  # type: ignore[type-arg]
    """The paths of the downloaded files, in the order they were enqueued,
    with ``success`` (:class:`Success` tuples), ``errors`` (:class:`Error`
    tuples) and ``urls`` (the URLs of the downloaded files, in the same
    order as the paths)."""

    def __init__(
        self,
        paths: Optional[List[str]] = None,
        *,
        success: Optional[List[Success]] = None,
        errors: Optional[List[Error]] = None,
    ) -> None:
        super().__init__(paths or [])
        self._success: List[Success] = list(success or [])
        self._errors: List[Error] = list(errors or [])

    @property
    def success(self) -> List[Success]:
        """The downloaded files."""
        return self._success

    @property
    def errors(self) -> List[Error]:
        """The URLs that failed."""
        return self._errors

    @property
    def urls(self) -> List[str]:
        """The URLs of the downloaded files."""
        return [s.url for s in self._success]

    def _add_success(self, path: str, url: str) -> None:
        self.data.append(path)
        self._success.append(Success(path, url))

    def _add_error(self, filepath_partial: str, url: str, exception: BaseException) -> None:
        self._errors.append(Error(filepath_partial, url, exception))

    def __str__(self) -> str:
        out = "\nSuccess:\n"
        for s in self._success:
            out += f"{s.path} {s.url}\n"
        out += "\nErrors:\n"
        for e in self._errors:
            out += f"({e.url},\n{e.exception!r})\n"
        return out

    def __repr__(self) -> str:
        return f"<Results: {len(self._success)} downloaded, {len(self._errors)} failed>{self}"
