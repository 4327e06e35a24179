"""The HTTPS forward proxy clients reach through ``HTTPS_PROXY``.

It answers ``CONNECT host:443`` for the vaults, Event Grid topics and sites (``<site>.azurewebsites.net``)
of the topology, management.azure.com,
graph.microsoft.com and login.microsoftonline.com by tunnelling the bytes to the local cloud's TLS
listener, and for ``<account>.blob.core.windows.net`` of the topology's storage accounts to Azurite
(see ``azurite.py``); TLS runs end to end between the client and that listener, so the client
verifies our certificate for the real host name. Every other CONNECT and every plain proxy request
is refused with 403, so nothing leaves this machine; a ``*.vault.azure.net`` or
``*.blob.core.windows.net``, ``*.eventgrid.azure.net`` or ``*.azurewebsites.net`` name that no vault, account, topic or
site has gets 502, the proxy's word for "that
name does not resolve", which is what a client of real Azure would run into.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

logger = logging.getLogger("local.cloud.proxy")

_HEAD_LIMIT = 16 * 1024
_HEAD_TIMEOUT = 10.0
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def _reply(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = text.encode("utf-8")
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode("ascii")
        + body
    )


def _no_delay(writer: asyncio.StreamWriter) -> None:
    # asyncio only sets TCP_NODELAY on sockets whose proto field says TCP, which sockets made
    # with socket.socket(AF_INET, SOCK_STREAM) do not; without it small TLS records wait for
    # delayed ACKs (40 ms per request).
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UpstreamUnavailable(Exception):
    """The service behind a host cannot be reached now; the message says why (answered with 502)."""


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    quick_ack: socket.socket | None = None,
    *,
    close_after: bool = False,
) -> None:
    try:
        while chunk := await reader.read(64 * 1024):
            if quick_ack is not None:
                # urllib3 leaves Nagle on for proxied connections, so a request's body waits for
                # the ACK of its headers; ACK at once instead of after Linux's delayed-ACK 40 ms.
                with contextlib.suppress(OSError):
                    quick_ack.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if close_after:
                # The server ended the connection: end the client's too, so neither side waits
                # on a half-open tunnel (a stopping Azurite waits for its sockets to close).
                writer.close()
            elif writer.can_write_eof():
                writer.write_eof()


class ConnectProxy:
    def __init__(
        self,
        decide: Callable[[str], str],
        upstream_port: int,
        blob_upstream: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """``decide(host)`` answers "tunnel" (the TLS listener), "blob" (the port ``blob_upstream()``
        gives, which may raise UpstreamUnavailable), "unknown" (502) or "refuse" (403)."""
        self._decide = decide
        self._upstream_port = upstream_port
        self._blob_upstream = blob_upstream
        self._open: set[asyncio.StreamWriter] = set()
        self._blob_tunnels: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        self._open.add(writer)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            pass  # the local cloud is stopping; the tunnel just ends
        finally:
            self._open.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    def close_all(self) -> None:
        """End every open tunnel (at shutdown), so no handler is left waiting on a read."""
        for writer in list(self._open):
            writer.transport.abort()

    def close_blob_tunnels(self) -> None:
        """End every tunnel to the blob service (a stopping Azurite waits for idle ones to close)."""
        for writer in list(self._blob_tunnels):
            writer.transport.abort()

    async def _connect_upstream(self, blob: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not blob:
            try:
                return await asyncio.open_connection("127.0.0.1", self._upstream_port)
            except OSError as exc:
                raise UpstreamUnavailable("The local cloud's TLS listener is not reachable.") from exc
        assert self._blob_upstream is not None
        for _ in range(3):
            try:
                port = await self._blob_upstream()
            except UpstreamUnavailable as exc:
                raise UpstreamUnavailable(f"The local cloud's blob service is not available: {exc}") from exc
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue  # restarted (new keys) between the two steps: ask again
        raise UpstreamUnavailable("The local cloud's blob service is not reachable.")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or parts[0].upper() != "CONNECT":
            # A plain-HTTP proxy request would send traffic somewhere we do not serve.
            method = parts[0] if parts else "?"
            logger.info("%s refused 403 (only CONNECT is served)", method)
            _reply(writer, "403 Forbidden", "The local cloud proxy only tunnels HTTPS (CONNECT).\n")
            await writer.drain()
            return
        host, _, port = parts[1].rpartition(":")
        host = host.strip("[]").lower()
        verdict = self._decide(host) if port == "443" else "refuse"
        blob = verdict == "blob" and self._blob_upstream is not None
        if verdict != "tunnel" and not blob:
            status = "502 Bad Gateway" if verdict == "unknown" else "403 Forbidden"
            logger.info("CONNECT %s refused %s", parts[1], status[:3])
            _reply(writer, status, f"The local cloud does not answer for {parts[1]}.\n")
            await writer.drain()
            return
        try:
            up_reader, up_writer = await self._connect_upstream(blob)
        except UpstreamUnavailable as exc:
            logger.warning("CONNECT %s refused 502: %s", parts[1], exc)
            _reply(writer, "502 Bad Gateway", f"{exc}\n")
            await writer.drain()
            return
        _no_delay(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        logger.debug("CONNECT %s tunnelled", parts[1])
        if blob:
            self._blob_tunnels.add(writer)
        try:
            client_socket = writer.get_extra_info("socket")
            await asyncio.gather(
                _pipe(reader, up_writer, client_socket), _pipe(up_reader, writer, close_after=blob)
            )
        finally:
            self._blob_tunnels.discard(writer)
            with contextlib.suppress(Exception):
                up_writer.close()
                await up_writer.wait_closed()


# The Azure hosts the local cloud serves besides the vaults: ARM, Microsoft Graph, Entra ID.
SERVICE_HOSTS = frozenset({"management.azure.com", "graph.microsoft.com", "login.microsoftonline.com"})


def host_policy(
    vault_hosts: frozenset[str],
    blob_hosts: frozenset[str] = frozenset(),
    topic_hosts: frozenset[str] = frozenset(),
    site_hosts: frozenset[str] = frozenset(),
) -> Callable[[str], str]:
    """The decision for each CONNECT host: the topology's vaults, Event Grid topics and sites'
    default host names, ARM, Graph and Entra ID are tunnelled to the TLS listener, the blob
    endpoints of its storage accounts to the blob service."""

    def decide(host: str) -> str:
        if host in SERVICE_HOSTS or host in vault_hosts or host in topic_hosts or host in site_hosts:
            return "tunnel"
        if host in blob_hosts:
            return "blob"
        if host.endswith(
            (".vault.azure.net", ".blob.core.windows.net", ".eventgrid.azure.net", ".azurewebsites.net")
        ):
            return "unknown"
        return "refuse"

    return decide
