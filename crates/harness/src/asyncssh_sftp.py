"""An SFTP server on asyncssh, for pymatris's tests: a second SFTP
implementation beside OpenSSH's, and one that hands out binary handles.

asyncssh's SFTPServer numbers its handles with a 4-byte big-endian counter,
so the 129th open file gets the handle 00 00 00 80, which is not UTF-8: a
client that keeps handles as text sends back another handle and fails.
The script checks that at startup and refuses to run if a new asyncssh
stopped doing it, so the tests that rely on it cannot pass by accident.

One user logs in with a password or with the keys of an authorized_keys
file; every other name or secret is refused. The server is chrooted to the
data dir, so `/a.bin` is the data dir's `a.bin`. Each successful login is
logged as "Accepted <method> for <user>", the way sshd logs it.

Started by crates/harness/src/asyncssh.rs:
    python asyncssh_sftp.py --port N --host-key F --authorized-keys F
        --user U --password P --root DIR
"""

import argparse
import asyncio
import sys

import asyncssh


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def check_binary_handles():
    """Fails unless the 129th handle is the non-UTF-8 00 00 00 80."""
    from asyncssh.sftp import SFTPServerHandler

    # The counter handles come from is private (asyncssh 2.x): if it is
    # gone or changed, this fails loudly rather than test nothing.
    handler = SFTPServerHandler.__new__(SFTPServerHandler)
    handler._file_handles = {}
    handler._dir_handles = {}
    handler._next_handle = 128
    handle = handler._get_next_handle()
    if handle != b"\x00\x00\x00\x80":
        sys.exit(f"asyncssh no longer issues binary handles: got {handle!r}")


class Server(asyncssh.SSHServer):
    def __init__(self, user, password, keys):
        self._user = user
        self._password = password
        self._keys = keys
        self._method = None

    def connection_made(self, conn):
        self._peer = conn.get_extra_info("peername")
        log("connection from", self._peer)

    def begin_auth(self, username):
        # True: authentication is required (for every name).
        return True

    def password_auth_supported(self):
        return True

    def validate_password(self, username, password):
        ok = username == self._user and password == self._password
        if ok:
            self._method = "password"
        else:
            log("Failed password for", username)
        return ok

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        ok = username == self._user and any(
            key.public_data == k.public_data for k in self._keys
        )
        if ok:
            self._method = "publickey"
        return ok

    def auth_completed(self):
        log(f"Accepted {self._method} for {self._user} from {self._peer}")


class CountingSFTPServer(asyncssh.SFTPServer):
    """Logs the bytes read of each file as it closes, as OpenSSH's
    sftp-server does at -l INFO: `close "PATH" bytes read N written 0`
    (crates/harness/src/sent.rs reads it)."""

    def __init__(self, chan, chroot):
        super().__init__(chan, chroot=chroot)
        self._files = {}

    def open(self, path, pflags, attrs):
        file_obj = super().open(path, pflags, attrs)
        self._files[id(file_obj)] = [path.decode("utf-8", "replace"), 0]
        return file_obj

    def read(self, file_obj, offset, size):
        data = super().read(file_obj, offset, size)
        if id(file_obj) in self._files:
            self._files[id(file_obj)][1] += len(data)
        return data

    def close(self, file_obj):
        path, sent = self._files.pop(id(file_obj), ["?", 0])
        log(f'close "{path}" bytes read {sent} written 0')
        return super().close(file_obj)


async def serve(args):
    keys = asyncssh.read_public_key_list(args.authorized_keys)
    await asyncssh.listen(
        host="127.0.0.1",
        port=args.port,
        server_host_keys=[args.host_key],
        server_factory=lambda: Server(args.user, args.password, keys),
        sftp_factory=lambda chan: CountingSFTPServer(chan, chroot=args.root),
        allow_scp=False,
        # Tests open many sessions at once.
        backlog=200,
    )
    log("asyncssh", asyncssh.__version__, "listening on 127.0.0.1 port", args.port)
    await asyncio.Event().wait()


def main():
    p = argparse.ArgumentParser()
    for name in ["port", "host-key", "authorized-keys", "user", "password", "root"]:
        p.add_argument("--" + name, required=True)
    args = p.parse_args()
    args.port = int(args.port)
    check_binary_handles()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
