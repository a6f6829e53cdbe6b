"""pymatris: parallel file downloads over HTTP(S), FTP(S) and SFTP.

pymatris 0.0.10's API on a Rust engine::

    from pymatris import Downloader

    dl = Downloader()
    dl.enqueue_file("https://example.org/a.parquet", path="./")
    results = dl.download()
    print(results)
"""

from . import exceptions
from ._native import version as _engine_version
from .config import SessionConfig
from .downloader import Downloader
from .results import Error, Results, Success

__all__ = ["Downloader", "SessionConfig", "Results", "Success", "Error", "exceptions", "__version__"]

__version__: str = _engine_version()
