"""The settings of a ``Downloader``: pymatris 0.0.10's ``SessionConfig``
with the engine's extra options, and ``dl.config``."""

from __future__ import annotations

import os

from . import _native

# Neither typing nor dataclasses at run time (see _dataclass.py); type
# checkers see the real dataclass.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass, field
    from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

    PathLike = Union[str, os.PathLike[str]]
else:
    from ._dataclass import dataclass, field

__all__ = ["SessionConfig", "DownloaderConfig", "DEFAULT_USER_AGENT"]

DEFAULT_USER_AGENT = f"pymatris/{_native.version()}"

#: The engine's idle timeout when ``timeouts`` is None.
DEFAULT_TIMEOUT = 60.0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass
class SessionConfig:
    """How the files of a ``Downloader`` are fetched.

    The first five fields are pymatris 0.0.10's. ``timeouts`` is an *idle*
    timeout in seconds: a transfer fails when no byte arrives for that long
    (an object with ``sock_read`` or ``total``, such as
    ``aiohttp.ClientTimeout``, is read too). ``chunksize`` is accepted for
    compatibility; the engine sizes its own buffers. ``log_level`` sets the
    level of the ``logging`` logger ``"pymatris"`` (``PYMATRIS_DEBUG=1`` in
    the environment: DEBUG).

    The other fields are the engine's: SFTP host keys are checked against
    ``known_hosts`` (default ``PYMATRIS_KNOWN_HOSTS``, else
    ``~/.ssh/known_hosts``); ``accept_new_host_keys`` adds unknown ones
    (default: ``PYMATRIS_ACCEPT_NEW_HOST_KEYS=1``); ``identity`` is an SSH
    private key; ``ca_cert`` one or more PEM files trusted besides the
    system's roots; ``insecure`` skips certificate and host key checks;
    ``proxy`` an HTTP(S) proxy URL, or a SOCKS5 one (``socks5://``,
    ``socks5h://`` where the proxy resolves names) for every protocol; ``max_speed`` the overall cap in bytes
    per second; ``max_per_host`` connections to one host at once;
    ``min_split_size`` the smallest part worth a connection, in bytes;
    ``netrc`` True for ``~/.netrc`` or a path; ``resume`` keeps the parts
    of interrupted downloads and resumes them next time.
    """

    headers: Optional[Dict[str, str]] = field(
        default_factory=lambda: {"User-Agent": DEFAULT_USER_AGENT}
    )
    chunksize: float = 1024
    file_progress: bool = True
    timeouts: Any = None
    log_level: Optional[Union[int, str]] = None
    known_hosts: Optional[PathLike] = None
    accept_new_host_keys: Optional[bool] = None
    identity: Optional[PathLike] = None
    ca_cert: Optional[Union[PathLike, Sequence[PathLike]]] = None
    insecure: bool = False
    proxy: Optional[str] = None
    max_speed: Optional[int] = None
    max_per_host: Optional[int] = None
    min_split_size: Optional[int] = None
    netrc: Optional[Union[bool, PathLike]] = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.log_level is None and _env_true("PYMATRIS_DEBUG"):
            self.log_level = 10  # logging.DEBUG
        if self.log_level is not None:
            import logging

            logger = logging.getLogger("pymatris")
            logger.setLevel(self.log_level)
            if not logger.handlers:
                handler = logging.StreamHandler()
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                logger.addHandler(handler)
        if self.accept_new_host_keys is None:
            self.accept_new_host_keys = _env_true("PYMATRIS_ACCEPT_NEW_HOST_KEYS")
        if self.known_hosts is None and os.environ.get("PYMATRIS_KNOWN_HOSTS"):
            self.known_hosts = os.environ["PYMATRIS_KNOWN_HOSTS"]
        _check_headers(self.headers)
        for name in ("max_speed", "max_per_host", "min_split_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")

    def _timeout_seconds(self) -> float:
        t = self.timeouts
        if t is None:
            return DEFAULT_TIMEOUT
        for attr in ("sock_read", "total"):
            value = getattr(t, attr, None)
            if value:
                return float(value)
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"timeouts must be a number of seconds, not {t!r}")
        if not t > 0:
            raise ValueError(f"timeouts must be positive, not {t!r}")
        return float(t)

    def _engine(self) -> Dict[str, Any]:
        """The engine's settings for this session."""
        headers = dict(self.headers or {})
        user_agent = DEFAULT_USER_AGENT
        for key in list(headers):
            if key.lower() == "user-agent":
                user_agent = str(headers.pop(key))
        ca = self.ca_cert
        ca_certs: List[str] = (
            [] if ca is None else [os.fspath(ca)] if isinstance(ca, (str, os.PathLike)) else [os.fspath(c) for c in ca]
        )
        netrc: Optional[str] = None
        if self.netrc is True:
            netrc = os.path.join(os.path.expanduser("~"), ".netrc")
        elif self.netrc:
            netrc = os.fspath(self.netrc)  # type: ignore[arg-type]
        return dict(
            timeout=self._timeout_seconds(),
            user_agent=user_agent,
            headers=_check_headers(headers),
            ca_certs=ca_certs,
            insecure=bool(self.insecure),
            proxy=self.proxy,
            netrc=netrc,
            identity=None if self.identity is None else os.fspath(self.identity),
            known_hosts=None if self.known_hosts is None else os.fspath(self.known_hosts),
            accept_new_host_keys=bool(self.accept_new_host_keys),
            max_speed=self.max_speed,
            max_per_host=self.max_per_host,
            min_split_size=self.min_split_size,
            resume=bool(self.resume),
        )


_SESSION_FIELDS = None


@dataclass
class DownloaderConfig:
    """``dl.config``: the Downloader's own settings, and the session's
    fields read through it (``dl.config.chunksize``, ``dl.config.timeouts``)."""

    max_parallel: int = 5
    max_splits: int = 5
    max_tries: int = 5
    all_progress: bool = True
    overwrite: bool = False
    config: SessionConfig = field(default_factory=SessionConfig)

    def __post_init__(self) -> None:
        for name in ("max_parallel", "max_splits", "max_tries"):
            _check_count(name, getattr(self, name))
        if self.config is None:
            self.config = SessionConfig()

    def __getattr__(self, name: str) -> Any:
        global _SESSION_FIELDS
        if _SESSION_FIELDS is None:
            _SESSION_FIELDS = set(SessionConfig.__match_args__)
        if name in _SESSION_FIELDS:
            return getattr(self.__dict__["config"], name)
        raise AttributeError(f"'DownloaderConfig' object has no attribute '{name}'")


_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _check_headers(headers: Any) -> List[Tuple[str, str]]:
    """`headers` as pairs, refused at once (`ValueError`) when a name is not
    an HTTP token or a value holds a line break or NUL: the engine would
    otherwise fail every file sent with them."""
    pairs = [(str(k), str(v)) for k, v in dict(headers or {}).items()]
    for name, value in pairs:
        if not name or any(c not in _TCHARS for c in name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"invalid value for HTTP header {name!r}")
    return pairs


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
