"""pyftpdlib for the pymatris test harness: FTP and explicit FTPS (AUTH TLS)
on one loopback port, a user with a password and anonymous, both rooted at
the shared data directory, read only.

A second FTP implementation beside vsftpd, and one whose quirks are easy to
switch on: a login that takes seconds (like pure-ftpd's default password
hashing) and a cap on sessions that answers the next login with a 421.

Configured by one JSON file named on the command line (see pyftpdlib.rs).
Each session runs in its own thread, as each runs in its own process on
pure-ftpd and vsftpd, so that a slow login holds up only its own session.
"""

import json
import logging
import sys
import threading
import time

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import ThreadedFTPServer


class SlowAuthorizer(DummyAuthorizer):
    """Spends `delay` seconds on every password check, right or wrong."""

    delay = 0.0

    def validate_authentication(self, username, password, handler):
        if self.delay:
            time.sleep(self.delay)
        super().validate_authentication(username, password, handler)


class Server(ThreadedFTPServer):
    """Counts sessions as `max_cons` says: pyftpdlib's own check lets one
    more in, counting its listening socket as the single-threaded server
    does. The same check guards PASV, where it would refuse the sessions
    already in their data channel (425): data connections are no sessions."""

    def _accept_new_cons(self):
        if threading.current_thread() is not threading.main_thread():
            # A session's thread, opening a data channel.
            return True
        # The acceptor, before it starts the new session's thread.
        return not self.max_cons or self._map_len() < self.max_cons


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    logging.basicConfig(
        filename=config["log"],
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(message)s",
    )

    authorizer = SlowAuthorizer()
    authorizer.delay = config["login_delay"]
    authorizer.add_user(config["user"], config["password"], config["data"], perm="elr")
    authorizer.add_anonymous(config["data"], perm="elr")

    handler = TLS_FTPHandler
    handler.authorizer = authorizer
    handler.certfile = config["cert"]
    handler.keyfile = config["key"]
    handler.passive_ports = range(config["pasv_min"], config["pasv_max"] + 1)
    handler.masquerade_address = "127.0.0.1"
    handler.banner = "pyftpdlib (pymatris harness) ready."
    # Bad-credential tests would otherwise wait this long per attempt.
    handler.auth_failed_timeout = 0
    handler.timeout = 600

    server = Server(("127.0.0.1", config["port"]), handler)
    # 0 means unlimited for both.
    server.max_cons = config["max_cons"]
    server.max_cons_per_ip = config["max_cons_per_ip"]
    server.serve_forever()


if __name__ == "__main__":
    main()
