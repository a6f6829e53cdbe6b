"""The exceptions of pymatris.

Every failed download in ``Results.errors`` carries one of these as its
``exception``. They all derive from :class:`PymatrisError`, which says which
URL failed (``url``, passwords shown as ``***``), the engine's kind of failure
(``kind``, e.g. ``"NotFound"``), whether trying again could help
(``retryable``), and the whole chain of causes (``chain``). Where a standard
exception means the same thing, the class derives from it too, so that
``except ConnectionError`` or ``except FileNotFoundError`` keep working:

====================================  ======================  ==============================
class                                  ``kind``                also a
====================================  ======================  ==============================
:class:`InvalidURLError`               ``InvalidUrl``          ``ValueError``
:class:`UnsupportedSchemeError`        ``UnsupportedScheme``   ``ValueError``
:class:`NotFoundError`                 ``NotFound``            ``FileNotFoundError``
:class:`PermissionDeniedError`         ``PermissionDenied``    ``PermissionError``
:class:`AuthenticationError`           ``Auth``
:class:`HostKeyError`                  ``HostKey``             (SFTP host key unknown/changed)
:class:`TLSError`                      ``Tls``
:class:`RangeError`                    ``RangeUnsupported``
:class:`NetworkError`                  ``Network``             ``ConnectionError``
:class:`IdleTimeoutError`              ``Timeout``             ``TimeoutError``
:class:`ProtocolError`                 ``Protocol``
:class:`IncompleteError`               ``Truncated``
:class:`RemoteChangedError`            ``Changed``
:class:`LocalIOError`                  ``Io``                  ``OSError``
:class:`ChecksumError`                 ``Checksum``
:class:`CancelledError`                ``Cancelled``
:class:`ServerBusyError`               ``Busy``                ``ConnectionError``
====================================  ======================  ==============================

A failure that an HTTP status caused is an :class:`HTTPError` (with
``status``, e.g. 404), and also the class of its kind:
:class:`HTTPNotFoundError` (404, 410), :class:`HTTPPermissionDeniedError`
(403), :class:`HTTPAuthenticationError` (401).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = [
    "PymatrisError",
    "InvalidURLError",
    "UnsupportedSchemeError",
    "NotFoundError",
    "PermissionDeniedError",
    "AuthenticationError",
    "HostKeyError",
    "TLSError",
    "RangeError",
    "NetworkError",
    "IdleTimeoutError",
    "ProtocolError",
    "IncompleteError",
    "RemoteChangedError",
    "LocalIOError",
    "ChecksumError",
    "CancelledError",
    "ServerBusyError",
    "HTTPError",
    "HTTPNotFoundError",
    "HTTPPermissionDeniedError",
    "HTTPAuthenticationError",
]


class PymatrisError(Exception):
    """A download that failed. ``str(exc)`` is ``"<kind>: <message>"``."""

    url: Optional[str]
    kind: str
    retryable: bool
    chain: str

    def __init__(
        self,
        message: str,
        *,
        url: Optional[str] = None,
        kind: str = "",
        retryable: bool = False,
        chain: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.kind = kind
        self.retryable = retryable
        self.chain = chain if chain is not None else message

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidURLError(PymatrisError, ValueError):
    """The URL does not parse, or lacks a part its protocol needs."""


class UnsupportedSchemeError(PymatrisError, ValueError):
    """No protocol of this build serves the URL's scheme."""


class NotFoundError(PymatrisError, FileNotFoundError):
    """The server says the file does not exist."""


class PermissionDeniedError(PymatrisError, PermissionError):
    """The server refuses access to the file."""


class AuthenticationError(PymatrisError):
    """Login or authentication failed."""


class HostKeyError(PymatrisError):
    """The SFTP server's host key is unknown (see ``accept_new_host_keys``) or changed."""


class TLSError(PymatrisError):
    """The TLS handshake or the certificate check failed."""


class RangeError(PymatrisError):
    """The server answered a range request in a way that cannot be trusted."""


class NetworkError(PymatrisError, ConnectionError):
    """Connecting failed, or the connection broke."""


class IdleTimeoutError(PymatrisError, TimeoutError):
    """No byte arrived for ``timeouts`` seconds."""


class ProtocolError(PymatrisError):
    """The server broke its protocol or answered with an error."""


class IncompleteError(PymatrisError):
    """The file ended before (or went past) its announced size."""


class RemoteChangedError(PymatrisError):
    """The file changed on the server while it was being downloaded."""


class LocalIOError(PymatrisError, OSError):
    """Writing the local file (or making its directory) failed."""


class ChecksumError(PymatrisError):
    """The file's SHA-256 is not the one asked for; the file was not kept."""


class CancelledError(PymatrisError):
    """The download was cancelled (Ctrl-C, or the awaiting task was cancelled)."""


class ServerBusyError(PymatrisError, ConnectionError):
    """The server refused one more connection."""


class HTTPError(ProtocolError):
    """An HTTP status that ends the download; ``status`` is its code."""

    status: int

    def __init__(self, message: str, *, status: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(message, **kwargs)
        self.status = status


class HTTPNotFoundError(HTTPError, NotFoundError):
    """HTTP 404 or 410."""


class HTTPPermissionDeniedError(HTTPError, PermissionDeniedError):
    """HTTP 403."""


class HTTPAuthenticationError(HTTPError, AuthenticationError):
    """HTTP 401."""


_BY_KIND = {
    "InvalidUrl": InvalidURLError,
    "UnsupportedScheme": UnsupportedSchemeError,
    "NotFound": NotFoundError,
    "PermissionDenied": PermissionDeniedError,
    "Auth": AuthenticationError,
    "HostKey": HostKeyError,
    "Tls": TLSError,
    "RangeUnsupported": RangeError,
    "Network": NetworkError,
    "Timeout": IdleTimeoutError,
    "Protocol": ProtocolError,
    "Truncated": IncompleteError,
    "Changed": RemoteChangedError,
    "Io": LocalIOError,
    "Checksum": ChecksumError,
    "Cancelled": CancelledError,
    "Busy": ServerBusyError,
}

_HTTP_BY_KIND = {
    "NotFound": HTTPNotFoundError,
    "PermissionDenied": HTTPPermissionDeniedError,
    "Auth": HTTPAuthenticationError,
}

def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _http_status(message: str) -> Optional[int]:
    """The status of the first "HTTP <3 digits>" that stands as words in
    `message` (the engine writes e.g. "HTTP 404 Not Found"). By hand, not
    with `re`: importing `re` costs more than all failures of a run."""
    start = message.find("HTTP ")
    while start >= 0:
        code = message[start + 5 : start + 8]
        before = message[start - 1 : start] if start else ""
        after = message[start + 8 : start + 9]
        if (
            len(code) == 3
            and code.isascii()
            and code.isdigit()
            and not (before and _word_char(before))
            and not (after and _word_char(after))
        ):
            return int(code)
        start = message.find("HTTP ", start + 1)
    return None


def _from_engine(url: str, kind: str, retryable: bool, message: str, chain: str) -> PymatrisError:
    """The exception for a failure the engine reported."""
    status = _http_status(message) if url.lower().startswith(("http://", "https://")) else None
    if status is not None:
        cls = _HTTP_BY_KIND.get(kind, HTTPError)
        return cls(message, status=status, url=url, kind=kind, retryable=retryable, chain=chain)
    return _BY_KIND.get(kind, PymatrisError)(
        message, url=url, kind=kind, retryable=retryable, chain=chain
    )
