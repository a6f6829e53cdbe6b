"""The Python API's row of `cargo xtask bench`: the workload's URLs
enqueued on a pymatris.Downloader, as a user of the package would.

Usage: python pymatris_api.py URL_LIST OUT_DIR [max_parallel=N]
[ca_cert=FILE] [identity=FILE] [known_hosts=FILE]. Exits 1 when a download
failed, printing why on stderr. Prints how long `download()` took
(`download() wall: SECONDS s`), which the bench shows beside the whole
process's wall: the difference is the interpreter's start and exit and
`import pymatris`.
"""

import sys
import time

from pymatris import Downloader, SessionConfig


def main() -> int:
    url_list, out, *options = sys.argv[1:]
    opts = dict(o.split("=", 1) for o in options)
    session = SessionConfig(
        file_progress=False,
        ca_cert=opts.get("ca_cert"),
        identity=opts.get("identity"),
        known_hosts=opts.get("known_hosts"),
    )
    kwargs = {"max_parallel": int(opts["max_parallel"])} if "max_parallel" in opts else {}
    dl = Downloader(all_progress=False, session_config=session, **kwargs)
    with open(url_list) as f:
        for line in f:
            if line.strip():
                dl.enqueue_file(line.strip(), path=out)
    started = time.perf_counter()
    results = dl.download()
    print(f"download() wall: {time.perf_counter() - started:.6f} s")
    for e in results.errors:
        print(f"{e.url}: {e.exception}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
