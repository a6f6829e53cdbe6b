"""The ``pymatris`` command of the wheel: the Rust command line tool
itself (same flags, exit codes and progress bars), entered from Python."""

from __future__ import annotations

import signal
import sys

from . import _native


def main() -> None:
    # The Rust tool handles Ctrl-C, SIGTERM and SIGHUP itself (cleaning up,
    # exit 130, 143, 129); Python's own handlers would turn them into a
    # KeyboardInterrupt after it has exited.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(_native.cli_main(["pymatris", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
