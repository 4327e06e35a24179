"""PostgreSQL's SCRAM-SHA-256 password verifier, computed on the client.

Sending ``ALTER ROLE ... PASSWORD '<verifier>'`` instead of the plaintext keeps the password
out of the server entirely: out of statement logs (``log_statement = ddl``), out of
``pg_stat_activity`` and out of error reports. The server stores a well-formed verifier as it
is (whatever ``password_encryption`` says), and checks logins against it.

The verifier is what ``PQencryptPasswordConn`` builds (RFC 5802 / RFC 7677)::

    SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>

with the password first normalised by SASLprep (RFC 4013) exactly as PostgreSQL's
``pg_saslprep`` does it: libpq prepares the password the same way when it logs in, so any
difference here would leave a role whose password cannot be typed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

# PostgreSQL's default (and the only value before version 16's scram_iterations setting).
DEFAULT_ITERATIONS = 4096
SALT_BYTES = 16
PREFIX = "SCRAM-SHA-256$"


def verifier(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` (a fresh random salt unless one is given).

    Raises:
        ValueError: ``password`` is empty or ``iterations`` is not positive.
    """
    if not password:
        raise ValueError("an empty password has no verifier")
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"{PREFIX}{iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def saslprep(password: str) -> str:
    """``password`` as PostgreSQL prepares it before hashing.

    Like ``pg_saslprep``, a pure-ASCII password is used unchanged, and one that SASLprep
    prohibits is used unchanged too (PostgreSQL then falls back to the raw bytes rather than
    refusing the password).
    """
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in password if not stringprep.in_table_b1(ch)
    )
    if not mapped:
        return password
    # pg_saslprep checks the mapped string, not the normalised one; do the same so the two
    # agree on which passwords fall back to their raw form.
    if any(_prohibited(ch) for ch in mapped) or not _bidi_ok(mapped):
        return password
    return unicodedata.normalize("NFKC", mapped)


def _prohibited(ch: str) -> bool:
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
        or stringprep.in_table_a1(ch)
    )


def _bidi_ok(text: str) -> bool:
    # RFC 3454 section 6: right-to-left text may hold no left-to-right character and must
    # begin and end with a right-to-left one.
    if not any(stringprep.in_table_d1(ch) for ch in text):
        return True
    if any(stringprep.in_table_d2(ch) for ch in text):
        return False
    return stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])
