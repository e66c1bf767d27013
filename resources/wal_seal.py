"""The WAL's seal: a secret kept outside the database that keys every entry's hash and signs checkpoints.

Someone with write access to the database can edit an entry and recompute a plain hash chain; they cannot
recompute an HMAC without the secret, which lives in the environment or a file, never in PostgreSQL:

- `DATA_MASH_WAL_KEY`: the secret itself (at least 32 characters, e.g. 64 hex digits);
- `DATA_MASH_WAL_KEY_FILE`: a file that holds it (a mounted secret);
- neither: `$DATA_MASH_HOME/secrets/wal.key`, created (mode 0600) on first use, for the embedded default.

From the secret come an HMAC key for entries, a short public key id (so that entries written under another key are
told apart from edited ones), and an Ed25519 key pair for checkpoints: the chain heads, signed, to export and check
later with the public key alone. Someone who has the secret can rewrite the chain and its MACs; an exported
checkpoint still shows that the entry at a position is no longer the one that was there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as _secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ENV = "DATA_MASH_WAL_KEY"
KEY_FILE_ENV = "DATA_MASH_WAL_KEY_FILE"
MIN_LENGTH = 32


class SealError(RuntimeError):
    """The WAL's key cannot be read, or a checkpoint cannot be trusted; the message says what to do."""


def canonical(value) -> str:
    """The one JSON form everything in the WAL is hashed and signed in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def default_key_file() -> Path:
    from resources.database import data_mash_home

    return data_mash_home() / "secrets" / "wal.key"


def _read_secret() -> tuple[bytes, str]:
    if value := os.environ.get(KEY_ENV):
        return _checked(value.strip(), f"${KEY_ENV}"), f"${KEY_ENV}"
    named = os.environ.get(KEY_FILE_ENV)
    path = Path(named) if named else default_key_file()
    if not path.exists():
        if named:
            raise SealError(f"the WAL key file {path} (${KEY_FILE_ENV}) does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(_secrets.token_hex(32) + "\n")
    try:
        value = path.read_text().strip()
    except OSError as error:
        raise SealError(f"cannot read the WAL key file {path}: {error.strerror}") from error
    return _checked(value, str(path)), str(path)


def _checked(value: str, where: str) -> bytes:
    if len(value) < MIN_LENGTH:
        raise SealError(f"the WAL key in {where} is {len(value)} characters; it must be at least {MIN_LENGTH} "
                        "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    return value.encode()


@dataclass(frozen=True)
class Seal:
    """What the secret gives: the entry MAC, the key id, and the checkpoint signing pair."""

    secret: bytes
    source: str  # where the secret came from, for messages (never the secret itself)

    def _derive(self, purpose: str) -> bytes:
        return hmac.new(self.secret, f"data-mash wal {purpose}".encode(), hashlib.sha256).digest()

    @property
    def key_id(self) -> str:
        return self._derive("key id").hex()[:16]

    def mac(self, fields: dict) -> str:
        return hmac.new(self._derive("entry"), canonical(fields).encode(), hashlib.sha256).hexdigest()

    def _signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._derive("checkpoint signing key"))

    @property
    def public_key(self) -> str:
        return self._signing_key().public_key().public_bytes_raw().hex()

    def sign(self, body: dict) -> str:
        return self._signing_key().sign(canonical(body).encode()).hex()


def signature_valid(body: dict, signature: str, public_key: str) -> bool:
    """Whether `signature` is the Ed25519 signature of `body` by the holder of `public_key` (hex)."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(bytes.fromhex(signature),
                                                                              canonical(body).encode())
    except (InvalidSignature, ValueError):
        return False
    return True


@lru_cache(maxsize=8)
def _seal_for(env_key: str | None, env_file: str | None, default_file: str) -> Seal:
    secret, source = _read_secret()
    return Seal(secret, source)


def current_seal() -> Seal:
    """The seal of this environment (read once per distinct setting)."""
    return _seal_for(os.environ.get(KEY_ENV), os.environ.get(KEY_FILE_ENV), str(default_key_file()))
