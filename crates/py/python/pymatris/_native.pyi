"""Type stubs of the native module (the Rust engine)."""

from typing import Callable, Iterator, List, Optional, Sequence, Tuple

def schemes() -> List[str]: ...
def version() -> str: ...
def cli_main(argv: Sequence[str]) -> int: ...
def shard_of(url: str, count: int) -> int: ...

Outcome = Tuple[int, str, str, Optional[Tuple[str, bool, str, str]]]

class Job:
    def __init__(
        self,
        *,
        max_parallel: int,
        max_splits: int,
        max_tries: int,
        overwrite: bool,
        timeout: float,
        user_agent: str,
        headers: Sequence[Tuple[str, str]],
        ca_certs: Sequence[str],
        insecure: bool,
        proxy: Optional[str],
        netrc: Optional[str],
        identity: Optional[str],
        known_hosts: Optional[str],
        accept_new_host_keys: bool,
        max_speed: Optional[int],
        max_per_host: Optional[int],
        min_split_size: Optional[int],
        resume: bool,
    ) -> None: ...
    def add(
        self,
        url: str,
        dir: str,
        *,
        filename: Optional[str] = ...,
        sha256: Optional[str] = ...,
        max_splits: Optional[int] = ...,
        max_tries: Optional[int] = ...,
        headers: Optional[Sequence[Tuple[str, str]]] = ...,
        overwrite: Optional[bool] = ...,
        mirrors: Optional[Sequence[str]] = ...,
    ) -> None: ...
    def run(self, on_events: Optional[Callable[[List[tuple]], None]] = ...) -> List[Outcome]: ...
    def iter(self, on_events: Optional[Callable[[List[tuple]], None]] = ...) -> OutcomeIter: ...
    def cancel(self) -> None: ...
    def __len__(self) -> int: ...

class OutcomeIter(Iterator[Outcome]):
    def __iter__(self) -> OutcomeIter: ...
    def __next__(self) -> Outcome: ...
    def close(self) -> None: ...
