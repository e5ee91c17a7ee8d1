"""CURVE keys for the agents: make them, load them, check them, apply them to sockets.

Keys are ZeroMQ certificate files as ``zmq.auth`` writes them: ``NAME.key`` holds the public key
(hand it to the other side), ``NAME.key_secret`` the public and the secret key (keep it). The
edge reads its own ``.key_secret`` and a folder of clients' ``.key`` files; the device agent reads
its own ``.key_secret`` and the edge's ``.key``. A malformed or missing file fails with one line
naming the file, not at the first handshake with a silent timeout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyFileError(ValueError):
    """A key file or key folder that cannot be used; the message names it."""


def _check_z85_key(key: bytes | None, path: Path, what: str) -> bytes:
    if key is None:
        raise KeyFileError(f"{path}: no {what} in this file")
    try:
        raw = z85.decode(key) if len(key) == 40 else b""
    except (ValueError, KeyError, UnicodeDecodeError):
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"{path}: {what} is not a 40-character Z85 CURVE key")
    return key


def load_key_file(path: str | os.PathLike[str], *, need_secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) from a certificate file; secret is required when ``need_secret``."""
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{p}: key file not found")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError, IndexError) as exc:
        raise KeyFileError(f"{p}: not a ZeroMQ certificate file ({exc})") from None
    _check_z85_key(public, p, "public key")
    if need_secret:
        _check_z85_key(secret, p, "secret key (use the .key_secret file)")
        check_private(p)
        if zmq.curve_public(secret) != public:
            raise KeyFileError(f"{p}: the secret key does not belong to the public key")
    return public, secret


def check_private(path: Path) -> None:
    """Refuse a secret key file that its group or others may read or write (POSIX): a key that
    others can read is no longer secret, and one they can write is theirs to replace."""
    if os.name != "posix":
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: secret key file is open to {'group and others' if mode & 0o007 else 'its group'} "
            f"(mode {mode:04o}); make it private with: chmod 600 {path}"
        )


def load_client_folder(folder: str | os.PathLike[str]) -> dict[bytes, Path]:
    """Public keys allowed to talk to the edge: every ``*.key`` file in ``folder``."""
    d = Path(folder)
    if not d.is_dir():
        raise KeyFileError(f"{d}: client key folder not found")
    keys: dict[bytes, Path] = {}
    for f in sorted(d.glob("*.key")):
        public, _ = load_key_file(f, need_secret=False)
        keys[public] = f
    if not keys:
        raise KeyFileError(f"{d}: no client public keys (*.key files) in this folder")
    return keys


def make_key_pair(
    out: str | os.PathLike[str], name: str, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``out``; the secret file is mode 0600.

    Refuses to overwrite existing files unless ``overwrite``: replacing a key silently locks
    every peer that trusted the old one out.
    """
    if not _NAME.match(name):
        raise KeyFileError(
            f"key name {name!r}: use 1-64 letters, digits or '._-', starting with a letter or digit"
        )
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    public_path = d / f"{name}.key"
    secret_path = d / f"{name}.key_secret"
    if not overwrite:
        for p in (public_path, secret_path):
            if p.exists():
                raise KeyFileError(f"{p}: already exists (pass --force to replace it)")
    old = os.umask(0o077)  # the secret must never exist world-readable, not even for a moment
    try:
        for p in (public_path, secret_path):
            if p.exists():
                p.unlink()
        pub, sec = zmq.auth.create_certificates(d, name)
    finally:
        os.umask(old)
    os.chmod(pub, 0o644)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


@dataclass(frozen=True)
class ClientKeys:
    """What a CURVE client needs: the server's public key and its own key pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(
        cls, server_public_file: str | os.PathLike[str], client_secret_file: str | os.PathLike[str]
    ) -> ClientKeys:
        server_public, _ = load_key_file(server_public_file, need_secret=False)
        public, secret = load_key_file(client_secret_file, need_secret=True)
        assert secret is not None
        return cls(server_public, public, secret)

    def __repr__(self) -> str:  # no key bytes in logs, reprs or tracebacks
        return "ClientKeys(server public key, own key pair: not shown)"

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the server (before ``connect``)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


@dataclass(frozen=True)
class ServerKeys:
    """What a CURVE server needs: its key pair and the allowed clients' public keys."""

    public: bytes
    secret: bytes
    clients: dict[bytes, Path]
    clients_folder: Path

    @classmethod
    def load(
        cls, secret_file: str | os.PathLike[str], clients_folder: str | os.PathLike[str]
    ) -> ServerKeys:
        public, secret = load_key_file(secret_file, need_secret=True)
        assert secret is not None
        return cls(public, secret, load_client_folder(clients_folder), Path(clients_folder))

    def __repr__(self) -> str:  # no key bytes in logs, reprs or tracebacks
        return f"ServerKeys(key pair: not shown, {len(self.clients)} client keys from {str(self.clients_folder)!r})"

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (before ``bind``); a ZAP handler must be running."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
