"""The ``pymatris`` command of the wheel: the Rust command line tool
itself (same flags, exit codes and progress bars), entered from Python."""

from __future__ import annotations

import signal
import sys

from . import _native


def main() -> None:
    # The Rust tool handles Ctrl-C itself (cleaning up, exit 130); Python's
    # handler would turn it into a KeyboardInterrupt after the tool exited.
    # A SIGINT the parent ignores (Python then keeps it ignored) stays
    # ignored, as the tool wants; SIGTERM and SIGHUP Python leaves alone.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(_native.cli_main(["pymatris", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
