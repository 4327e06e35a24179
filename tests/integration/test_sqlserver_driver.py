"""The sqlserver targets through a real ODBC stack: pyodbc, unixODBC's driver manager and FreeTDS's
ODBC driver (Debian's tdsodbc 1.3.17, registered as "FreeTDS"), against sockets on 127.0.0.1.

What is real: the target module, pyodbc, unixODBC, FreeTDS's driver and its TDS protocol, TCP.
What stands in: ODBC Driver 18 (the production driver, not installable here) is replaced by
FreeTDS through the setting ``ROTATION_SQLSERVER_ODBC_DRIVER=FreeTDS``; SQL Server (not
installable either) by ``FakeTds``, a few lines of TDS in this file that answer the client's
PRELOGIN and LOGIN7 packets as a script says (refuse encryption, refuse the login with a given
error, accept it, fail a statement, or never answer) and decode what the client sent.

The connection string stays ODBC Driver 18's; it is not bent toward FreeTDS. What FreeTDS makes
of it (from its source, src/odbc/connectparams.c and src/tds/login.c at v1.3.17, and checked
here):

- ``Driver={...}``: read by unixODBC, braces and ``}}`` understood.
- ``Database``, ``UID``, ``PWD``, ``APP``: honoured, with the ODBC brace rules (``;``, ``=``,
  ``{``, spaces and doubled ``}`` arrive intact: the fake server decodes LOGIN7).
- ``Server=tcp:<host>,<port>``: the port after the comma is honoured; the ``tcp:`` protocol
  prefix is not understood: FreeTDS looks up ``tcp:127.0.0.1`` as a host name and fails. The
  tests set FreeTDS's own environment variable ``TDSHOST=127.0.0.1``, which supplies the address
  (FreeTDS reads it at every connection, after the string).
- ``Encrypt=yes``, ``TrustServerCertificate=no``: ignored, so FreeTDS only *requests*
  encryption and verifies no certificate; with a server that refuses encryption it logs in in
  clear (``test_freetds_does_not_read_encrypt_yes``). Its own keyword ``Encryption=require``
  does refuse such a server; the TLS test adds it through the engine's ``connect`` seam (a
  wrapper around the real ``pyodbc.connect``). Certificate verification needs a CA file in
  freetds.conf, which a ``Server=`` connection never reads, so a certificate that does not
  verify cannot be shown with FreeTDS.
- Login timeout: ``SQL_ATTR_LOGIN_TIMEOUT`` (pyodbc's ``timeout``) is honoured. FreeTDS's default
  TDS version "auto" retries a timed-out login as TDS 5.0 and then blocks in its disconnect with
  no timeout; the tests set ``TDSVER=7.4`` (what ODBC Driver 18 speaks).
- Query timeout: ``SQL_ATTR_QUERY_TIMEOUT`` (pyodbc's ``connection.timeout``) is honoured; FreeTDS
  then sends a cancel and waits as long again for its acknowledgement.
- ``SQL_COPT_SS_ACCESS_TOKEN``: not supported; with no UID FreeTDS fails before LOGIN7.
- FreeTDS reports every TLS failure as ``08001 Unable to connect to data source``, which says
  nothing of TLS; the module classifies that as a network failure (transient). ODBC Driver 18
  says ``SSL Provider: ...``, which the module classifies as a permanent TargetError naming TLS
  (tests/unit/test_sqlserver_target.py, with the driver's texts).

After every test no value may be in the captured logs, and no error may carry one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyodbc
import pytest
from database_battery_helpers import Values, assert_clean

from local.ports import free_port
from rotation.errors import AuthenticationFailed, RotationError, TargetError, TransientError
from rotation.settings import Settings
from rotation.targets.base import AdminSpec, Credentials, TargetSpec
from rotation.targets.logins import PasswordLogin, Principal, Purpose
from rotation.targets.sqlserver import KIND_LOGIN, STATEMENTS, SqlServerEngine

pytestmark = pytest.mark.skipif(
    "FreeTDS" not in pyodbc.drivers(), reason="FreeTDS's ODBC driver is not registered"
)

SETTINGS = Settings.from_environ({"ROTATION_SQLSERVER_ODBC_DRIVER": "FreeTDS"})
LOGIN_TIMEOUT = 2


# -- a fake TDS server ----------------------------------------------------------------------------

PRELOGIN, LOGIN7, SQL_BATCH, RPC, ATTENTION, REPLY = 0x12, 0x10, 0x01, 0x03, 0x06, 0x04
ENCRYPT_NOT_SUP = 0x02


def _recv(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_message(conn: socket.socket) -> tuple[int, bytes] | None:
    """One TDS message (its packets joined): ``(type, payload)``, or None when the client left."""
    payload = b""
    while True:
        header = _recv(conn, 8)
        if header is None:
            return None
        body = _recv(conn, struct.unpack(">H", header[2:4])[0] - 8)
        if body is None:
            return None
        payload += body
        if header[1] & 0x01:  # end of message
            return header[0], payload


def reply(payload: bytes) -> bytes:
    return bytes([REPLY, 0x01]) + struct.pack(">H", len(payload) + 8) + b"\x00\x00\x01\x00" + payload


def prelogin_reply(encryption: int) -> bytes:
    # Options VERSION (offset 11, 6 bytes) and ENCRYPTION (offset 17, 1 byte), then the data.
    options = b"\x00" + struct.pack(">HH", 11, 6) + b"\x01" + struct.pack(">HH", 17, 1) + b"\xff"
    return reply(options + bytes([15, 0, 0x07, 0xD0, 0, 0]) + bytes([encryption]))


def _b_varchar(text: str) -> bytes:
    return bytes([len(text)]) + text.encode("utf-16-le")


def error_token(number: int, text: str, *, state: int = 1, severity: int = 14) -> bytes:
    body = (
        struct.pack("<iBB", number, state, severity)
        + struct.pack("<H", len(text))
        + text.encode("utf-16-le")
        + _b_varchar("fake")
        + _b_varchar("")
        + struct.pack("<i", 1)
    )
    return b"\xaa" + struct.pack("<H", len(body)) + body


def done_token(*, error: bool = False) -> bytes:
    return b"\xfd" + struct.pack("<HHQ", 0x02 if error else 0, 0, 0)


def select_one_tokens() -> bytes:
    """The answer to ``SELECT 1``: one int column, one row, DONE with a count."""
    columns = b"\x81" + struct.pack("<H", 1) + struct.pack("<IH", 0, 0) + b"\x26\x04" + b"\x00"
    row = b"\xd1" + b"\x04" + struct.pack("<i", 1)
    return columns + row + b"\xfd" + struct.pack("<HHQ", 0x10, 0xC1, 1)


def loginack_token() -> bytes:
    body = (
        b"\x01" + bytes([0x74, 0, 0, 0x04]) + _b_varchar("Microsoft SQL Server") + bytes([15, 0, 0x07, 0xD0])
    )
    return b"\xad" + struct.pack("<H", len(body)) + body


def decode_login7(payload: bytes) -> dict[str, str]:
    """The strings of a LOGIN7 packet; the password un-scrambled (each byte XOR 0xA5, nibbles
    swapped, as TDS sends it)."""
    names = ["host", "user", "password", "app", "server", "extension", "library", "language", "database"]
    out = {}
    for i, name in enumerate(names):
        offset, chars = struct.unpack("<HH", payload[36 + 4 * i : 40 + 4 * i])
        raw = payload[offset : offset + 2 * chars]
        if name == "password":
            raw = bytes((((b ^ 0xA5) << 4) | ((b ^ 0xA5) >> 4)) & 0xFF for b in raw)
        out[name] = raw.decode("utf-16-le")
    return out


@dataclass
class Script:
    """What the fake server does. ``silent``: accept TCP and never say a word. Otherwise it
    answers PRELOGIN refusing encryption; then ``login_error`` (number, text) refuses the login,
    as does a password other than ``password`` when one is given; else the login is accepted
    and every request answered (``SELECT 1`` with its row), except one holding ``ALTER``
    (answered with ``statement_error`` when given) and ``SELECT 1`` when ``hang_on_select``."""

    silent: bool = False
    login_error: tuple[int, str] | None = None
    password: str | None = None
    statement_error: tuple[int, str] | None = None
    hang_on_select: bool = False


@dataclass
class FakeTds:
    script: Script
    port: int = 0
    connections: int = 0
    prelogins: int = 0
    logins: list[dict[str, str]] = field(default_factory=list)
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> FakeTds:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, run: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=run, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._sockets.append(conn)
            if not self.script.silent:
                self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        # OSError: the client or __exit__ closed the socket.
        with conn, contextlib.suppress(OSError):
            self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        message = read_message(conn)
        if message is None or message[0] != PRELOGIN:
            return
        self.prelogins += 1
        conn.sendall(prelogin_reply(ENCRYPT_NOT_SUP))
        message = read_message(conn)
        if message is None or message[0] != LOGIN7:
            return
        sent = decode_login7(message[1])
        self.logins.append(sent)
        refusal = self.script.login_error
        if self.script.password is not None and sent["password"] != self.script.password:
            refusal = (18456, f"Login failed for user '{sent['user']}'.")
        if refusal:
            conn.sendall(reply(error_token(*refusal) + done_token(error=True)))
            return
        conn.sendall(reply(loginack_token() + done_token()))
        while (message := read_message(conn)) is not None:
            self.requests.append(message)
            if message[0] == ATTENTION:
                return
            payload = message[1]
            if self.script.statement_error and "ALTER".encode("utf-16-le") in payload:
                number, text = self.script.statement_error
                conn.sendall(reply(error_token(number, text, severity=16) + done_token(error=True)))
            elif "SELECT 1".encode("utf-16-le") in payload:
                if not self.script.hang_on_select:  # else never answered
                    conn.sendall(reply(select_one_tokens()))
            else:
                conn.sendall(reply(done_token()))


@pytest.fixture
def fake() -> Iterator[Callable[[Script], FakeTds]]:
    servers: list[FakeTds] = []

    def start(script: Script) -> FakeTds:
        server = FakeTds(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


# -- the tests' side ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def freetds(monkeypatch: pytest.MonkeyPatch) -> None:
    """FreeTDS's own environment: the address the product's ``tcp:`` host means, and TDS 7.4."""
    monkeypatch.setenv("TDSHOST", "127.0.0.1")
    monkeypatch.setenv("TDSVER", "7.4")
    for name in ("TDSPORT", "TDSDUMP", "FREETDSCONF", "FREETDS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def values(caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    caplog.set_level(logging.DEBUG)
    vals = Values(KIND_LOGIN)
    yield vals
    for text in vals.seen:
        assert text not in caplog.text, "a value reached the application log"


def spec(
    port: int, login: str = "app", admin: AdminSpec | None = None, database: str = "appdb"
) -> TargetSpec:
    return TargetSpec(KIND_LOGIN, f"127.0.0.1:{port}/{database}", login, admin or AdminSpec("self"))


def engine(port: int, *, settings: Settings = SETTINGS, **kw: Any) -> SqlServerEngine:
    return SqlServerEngine(spec(port, **kw), settings, login_timeout=LOGIN_TIMEOUT)


def target(port: int, **kw: Any) -> PasswordLogin:
    s = spec(port, **kw)
    return PasswordLogin(s, SqlServerEngine(s, SETTINGS, login_timeout=LOGIN_TIMEOUT))


# -- reaching the server, and not --------------------------------------------------------------


def test_an_unreachable_server_is_transient(values: Values) -> None:
    old, new = values.new(), values.new()
    t = target(free_port())  # nothing listens there
    using = Credentials(current=old)

    for attempt in (
        lambda: t.apply(new=new, using=using),
        lambda: t.verify(value=new),
        lambda: t.revert(previous=old, new=new, using=using),
    ):
        started = time.monotonic()
        with pytest.raises(TransientError) as failed:
            attempt()
        assert time.monotonic() - started < LOGIN_TIMEOUT + 3
        assert "08S01" in str(failed.value)  # FreeTDS: "Unable to connect: Adaptive Server is unavailable"
        assert_clean(failed.value, old, new)


def test_a_server_that_never_answers_times_out_as_transient(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    # Accepts TCP and never says a word: a hung server or a black-holing firewall.
    server = fake(Script(silent=True))
    started = time.monotonic()
    with pytest.raises(TransientError, match="HYT00") as failed:
        target(server.port).verify(value=values.new())
    assert LOGIN_TIMEOUT - 0.5 < time.monotonic() - started < LOGIN_TIMEOUT + 3
    assert server.connections == 1
    assert "Timeout expired" in str(failed.value)


def test_the_connection_string_as_a_real_driver_reads_it(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    # Values with the characters the braces must protect. The fake decodes the LOGIN7 packet and
    # then refuses the login, as a server refuses a wrong password.
    server = fake(Script(login_error=(18456, "Login failed for user 'x'.")))
    login = "we;ird=login {x y"
    password = values.of("p;w=d {and more ")
    database = "data;base={odd"
    e = engine(server.port, login=login, database=database)

    with (
        pytest.raises(AuthenticationFailed),
        e.session(Principal(login, password, description="the current value"), purpose="login", hide=()),
    ):
        pass

    (sent,) = server.logins
    assert (sent["user"], sent["password"], sent["database"]) == (login, password.reveal(), database)
    assert sent["app"] == "keyvault-rotation-hub"
    assert sent["server"].startswith("tcp:127.0.0.1"), "FreeTDS keeps the protocol prefix as the server name"


def test_freetds_does_not_undouble_closing_braces(values: Values, fake: Callable[[Script], FakeTds]) -> None:
    """A difference from the production driver, recorded so that nobody reads the test above as
    covering ``}``: the module doubles ``}`` inside braces as MS-ODBCSTR (Microsoft's
    connection-string format, which ODBC Driver 18 follows) says; FreeTDS 1.3.17 keeps both
    characters, ending a braced value at the first ``}`` followed by ``;``. The unit tests check
    the doubling against the MS-ODBCSTR rules."""
    server = fake(Script(login_error=(18456, "Login failed for user 'x'.")))
    password = values.of("close}brace")
    with (
        pytest.raises(AuthenticationFailed),
        engine(server.port).session(
            Principal("app", password, description="the current value"), purpose="login", hide=()
        ),
    ):
        pass
    assert server.logins[0]["password"] == "close}}brace"


def test_a_change_of_a_server_login_connects_to_master(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    server = fake(Script(login_error=(18456, "Login failed for user 'app'.")))
    e = engine(server.port)
    cases: tuple[tuple[Purpose, str], ...] = (("change", "master"), ("login", "appdb"))
    for purpose, database in cases:
        with (
            pytest.raises(AuthenticationFailed),
            e.session(
                Principal("app", values.new(), description="the current value"), purpose=purpose, hide=()
            ),
        ):
            pass
        assert server.logins[-1]["database"] == database


# -- encryption ---------------------------------------------------------------------------------


def test_freetds_does_not_read_encrypt_yes(values: Values, fake: Callable[[Script], FakeTds]) -> None:
    """The reason the next test adds FreeTDS's own keyword: given only the product's string,
    FreeTDS logs in to a server that refuses encryption, in clear. (ODBC Driver 18 would not.)"""
    server = fake(Script(login_error=(18456, "Login failed for user 'app'.")))
    with pytest.raises(AuthenticationFailed):
        target(server.port).apply(new=values.new(), using=Credentials(current=values.new()))
    assert server.logins, "a LOGIN7 reached a server that had refused encryption"


def test_a_server_that_refuses_encryption_gets_no_credentials(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    server = fake(Script(login_error=(18456, "Login failed for user 'app'.")))

    def connect_requiring_encryption(connstring: str, /, **kw: Any) -> Any:
        # FreeTDS's equivalent of the product's Encrypt=yes, which FreeTDS ignores.
        return pyodbc.connect(connstring + "Encryption=require;", **kw)

    s = spec(server.port)
    t = PasswordLogin(s, SqlServerEngine(s, SETTINGS, connect=connect_requiring_encryption))
    old, new = values.new(), values.new()

    with pytest.raises(RotationError) as failed:
        t.apply(new=new, using=Credentials(current=old))

    assert server.prelogins == 1
    assert server.logins == [], "no credentials were sent to a server that refused encryption"
    assert_clean(failed.value, old, new)
    # FreeTDS says only "Unable to connect to data source" (08001): nothing tells TLS apart from
    # a network failure, so the module retries it. ODBC Driver 18's "SSL Provider" texts are
    # classified permanent (unit tests).
    assert "08001" in str(failed.value)


# -- what the server says, through the real driver ------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ((18456, "Login failed for user 'app'."), AuthenticationFailed),
        (
            (18488, "Login failed for user 'app'. Reason: The password of the account must be changed."),
            AuthenticationFailed,
        ),
        ((18470, "Login failed for user 'app'. Reason: The account is disabled."), AuthenticationFailed),
        ((4060, 'Cannot open database "appdb" requested by the login. The login failed.'), TransientError),
        ((40613, "Database 'appdb' on server 'fake' is not currently available."), TransientError),
    ],
)
def test_login_refusals_are_classified_by_their_number(
    values: Values, fake: Callable[[Script], FakeTds], error: tuple[int, str], expected: type[RotationError]
) -> None:
    server = fake(Script(login_error=error))
    secret = values.new()
    with (
        pytest.raises(RotationError) as failed,
        engine(server.port).session(
            Principal("app", secret, description="the current value"), purpose="login", hide=()
        ),
    ):
        pass
    assert type(failed.value) is expected, str(failed.value)
    assert f"({error[0]})" in str(failed.value)  # FreeTDS: SQLSTATE 42000, the number decides
    assert_clean(failed.value, secret)


def test_a_refused_change_is_permanent_and_the_values_travel_as_parameters(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    text = "Cannot alter the login 'app', because it does not exist or you do not have permission."
    old, new = values.new(), values.new()
    server = fake(Script(password=old.reveal(), statement_error=(15151, text)))
    t = target(server.port)

    with pytest.raises(TargetError) as failed:
        t.apply(new=new, using=Credentials(current=old))

    assert "15151" in str(failed.value)
    assert "ALTER ANY LOGIN" in str(failed.value)
    assert_clean(failed.value, old, new)
    # FreeTDS sends the batch as an RPC to sp_executesql: the text (with @P1.. for the ?) whole
    # and free of values, each value a parameter of its own.
    rpc = next(
        payload for kind, payload in server.requests if kind == RPC and b"A\x00L\x00T\x00E\x00R" in payload
    )
    statement = STATEMENTS[(KIND_LOGIN, True)]
    for n in (1, 2, 3):
        statement = statement.replace("?", f"@P{n}", 1)
    assert statement.encode("utf-16-le") in rpc
    for value in ("app", new.reveal(), old.reveal()):
        assert value.encode("utf-16-le") in rpc


def test_a_statement_that_never_returns_times_out_as_transient(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    value = values.new()
    server = fake(Script(password=value.reveal(), hang_on_select=True))
    s = spec(server.port)
    e = SqlServerEngine(s, SETTINGS, login_timeout=LOGIN_TIMEOUT, query_timeout=1)
    started = time.monotonic()
    with pytest.raises(TransientError, match="HYT00"):
        PasswordLogin(s, e).verify(value=value)
    # FreeTDS waits the timeout, sends a cancel and waits as long again for its acknowledgement.
    assert time.monotonic() - started < 1 + 1 + 3
    assert any(kind == ATTENTION for kind, _ in server.requests)


# -- configuration ------------------------------------------------------------------------------


def test_an_unknown_driver_is_a_permanent_error_naming_the_setting(values: Values) -> None:
    settings = Settings.from_environ({"ROTATION_SQLSERVER_ODBC_DRIVER": "ODBC Driver 99 for SQL Server"})
    old, new = values.new(), values.new()
    s = spec(free_port())
    t = PasswordLogin(s, SqlServerEngine(s, settings))
    with pytest.raises(TargetError) as failed:
        t.apply(new=new, using=Credentials(current=old))
    assert "ROTATION_SQLSERVER_ODBC_DRIVER" in str(failed.value)
    assert "ODBC Driver 99 for SQL Server" in str(failed.value)  # unixODBC: "Can't open lib ..."
    assert "[permanent]" in str(failed.value)
    assert_clean(failed.value, old, new)


def test_a_driver_without_access_tokens_fails_without_showing_the_token(
    values: Values, fake: Callable[[Script], FakeTds]
) -> None:
    server = fake(Script(login_error=(18456, "Login failed for user '<token-identified principal>'.")))
    token = values.of("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.hub-identity.signature")
    old, new = values.new(), values.new()
    t = target(server.port, admin=AdminSpec("managed-identity"))
    with pytest.raises(RotationError) as failed:
        t.apply(new=new, using=Credentials(current=old, access_token=lambda scope: token))
    assert_clean(failed.value, token, old, new)
    # FreeTDS has no SQL_COPT_SS_ACCESS_TOKEN: it attempts no login without a UID.
    assert [sent["user"] for sent in server.logins] == ["app"], "only the login's own check logged in"
