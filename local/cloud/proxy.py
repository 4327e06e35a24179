"""The HTTPS forward proxy clients reach through ``HTTPS_PROXY``.

It answers ``CONNECT host:443`` for the vaults of the topology, management.azure.com,
graph.microsoft.com and login.microsoftonline.com by tunnelling the bytes to the local cloud's TLS listener; TLS runs end to end between the client
and that listener, so the client verifies our certificate for the real host name. Every other
CONNECT and every plain proxy request is refused with 403, so nothing leaves this machine; a
``*.vault.azure.net`` name that no vault has gets 502, the proxy's word for "that name does not
resolve", which is what a client of real Azure would run into.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

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


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, quick_ack: socket.socket | None = None
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
            if writer.can_write_eof():
                writer.write_eof()


class ConnectProxy:
    def __init__(self, decide: Callable[[str], str], upstream_port: int) -> None:
        """``decide(host)`` answers "tunnel", "unknown" (502) or "refuse" (403)."""
        self._decide = decide
        self._upstream_port = upstream_port
        self._open: set[asyncio.StreamWriter] = set()

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
        if verdict != "tunnel":
            status = "502 Bad Gateway" if verdict == "unknown" else "403 Forbidden"
            logger.info("CONNECT %s refused %s", parts[1], status[:3])
            _reply(writer, status, f"The local cloud does not answer for {parts[1]}.\n")
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            _reply(writer, "502 Bad Gateway", "The local cloud's TLS listener is not reachable.\n")
            await writer.drain()
            return
        _no_delay(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        logger.debug("CONNECT %s tunnelled", parts[1])
        try:
            client_socket = writer.get_extra_info("socket")
            await asyncio.gather(_pipe(reader, up_writer, client_socket), _pipe(up_reader, writer))
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()
                await up_writer.wait_closed()


# The Azure hosts the local cloud serves besides the vaults: ARM, Microsoft Graph, Entra ID.
SERVICE_HOSTS = frozenset({"management.azure.com", "graph.microsoft.com", "login.microsoftonline.com"})


def host_policy(vault_hosts: frozenset[str]) -> Callable[[str], str]:
    """The decision for each CONNECT host: the topology's vaults, ARM, Graph and Entra ID are tunnelled."""

    def decide(host: str) -> str:
        if host in SERVICE_HOSTS or host in vault_hosts:
            return "tunnel"
        if host.endswith(".vault.azure.net"):
            return "unknown"
        return "refuse"

    return decide
