"""Backup blobs: opaque, encrypted, and only readable by the local cloud that wrote them.

Key Vault's blobs are encrypted too; a client can only hand one back to ``restore``. The key
lives in the data dir, so a blob taken before a restart restores after it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import asdict
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from local.cloud.kv_store import SecretBackup, SecretVersion

_MAGIC = b"LCKV1"


class InvalidBackup(ValueError):
    """The blob was not written by this local cloud, or was altered."""


class BackupCodec:
    def __init__(self, data_dir: Path) -> None:
        path = data_dir / "backup.key"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(AESGCM.generate_key(bit_length=256))
            os.replace(tmp, path)
        self._aead = AESGCM(path.read_bytes())

    def encode(self, backup: SecretBackup) -> str:
        plain = json.dumps({"name": backup.name, "versions": [asdict(v) for v in backup.versions]})
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plain.encode("utf-8"), _MAGIC)
        return base64.urlsafe_b64encode(_MAGIC + nonce + sealed).rstrip(b"=").decode("ascii")

    def decode(self, blob: str) -> SecretBackup:
        """Raises InvalidBackup for anything this local cloud did not write."""
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        except (ValueError, TypeError) as exc:
            raise InvalidBackup("not base64url") from exc
        if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + 12 + 16:
            raise InvalidBackup("not a backup blob")
        nonce, sealed = raw[len(_MAGIC) : len(_MAGIC) + 12], raw[len(_MAGIC) + 12 :]
        try:
            doc = json.loads(self._aead.decrypt(nonce, sealed, _MAGIC))
        except InvalidTag as exc:
            raise InvalidBackup("blob does not decrypt") from exc
        return SecretBackup(name=doc["name"], versions=[SecretVersion(**v) for v in doc["versions"]])
