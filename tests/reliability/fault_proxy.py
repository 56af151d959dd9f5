"""A TCP proxy on 127.0.0.1 between workers and PostgreSQL that misbehaves on request.

Every client connection is a :class:`Link`. The proxy reads the PostgreSQL startup packet
as it passes, so each link knows its ``application_name`` (pgqueue names its connections
``pgqueue-worker``, ``pgqueue-heartbeat``, ``pgqueue-listener``...), and faults can target
some links only:

- ``blackhole(match)``: the link stays open but no byte crosses it again, either way
  (a half-open connection: the peer vanished without a FIN or RST).
- ``stall(match)`` / ``resume()``: bytes wait in the proxy until resumed, and then all
  arrive (a network partition that heals before TCP gives up).
- ``reset(match)``: both sides see a connection reset (RST).
- ``delay``: seconds added to every chunk, both ways.
- ``refuse``: new connections are reset at once (the database host is unreachable).

The proxy runs its own event loop in a daemon thread; its methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

_APP_NAME = re.compile(rb"application_name\x00([^\x00]*)\x00")


@dataclass(eq=False)
class Link:
    """One proxied client connection."""

    number: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    application_name: str | None = None
    blackholed: bool = False
    stalled: bool = False
    closed: bool = False
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    bytes_up: int = 0
    bytes_down: int = 0


Match = Callable[[Link], bool]


def app_is(*names: str) -> Match:
    """A match for links whose application_name is one of ``names``."""
    return lambda link: link.application_name in names


def every(link: Link) -> bool:
    return True


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``target``; see the module docstring for the faults.

    ``listen`` is the address to listen on instead of 127.0.0.1 (another local address, such as
    a bridge's), or the path of a Unix socket (``port`` is then 0)."""

    def __init__(self, target_host: str, target_port: int, listen: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen = listen
        self.delay = 0.0
        self.refuse = False
        self.links: list[Link] = []
        self._counter = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        assert self._server is not None, "the proxy did not start"
        address = self._server.sockets[0].getsockname()
        self.port: int = 0 if isinstance(address, str) else address[1]

    # --- control (any thread) -----------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def live(self, match: Match = every) -> list[Link]:
        with self._lock:
            return [link for link in self.links if not link.closed and match(link)]

    def blackhole(self, match: Match = every) -> list[Link]:
        """Silence the matching live links for good; return them."""
        hit = self.live(match)
        for link in hit:
            link.blackholed = True
        return hit

    def stall(self, match: Match = every) -> list[Link]:
        """Hold the bytes of the matching live links until :meth:`resume`; return them."""
        hit = self.live(match)

        def apply() -> None:
            for link in hit:
                link.stalled = True
                link.resumed.clear()

        self._call(apply)
        return hit

    def resume(self) -> None:
        def apply() -> None:
            for link in self.links:
                if link.stalled:
                    link.stalled = False
                    link.resumed.set()

        self._call(apply)

    def reset(self, match: Match = every) -> list[Link]:
        """Reset the matching live links (RST to both sides); return them."""
        hit = self.live(match)

        def apply() -> None:
            for link in hit:
                self._abort(link)

        self._call(apply)
        return hit

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for link in self.links:
                self._abort(link)

        if self._loop.is_running():
            self._call(stop)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            if self.listen.startswith("/"):
                self._server = await asyncio.start_unix_server(self._accept, self.listen)
            else:
                self._server = await asyncio.start_server(self._accept, self.listen, 0)
            self._ready.set()

        self._loop.run_until_complete(serve())
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    @staticmethod
    def _abort(link: Link) -> None:
        link.closed = True
        for writer in (link.client, link.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    # SO_LINGER 0: close() sends RST rather than FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            writer.transport.abort()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            self._abort(Link(0, client_writer, client_writer))
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._abort(Link(0, client_writer, client_writer))
            return
        with self._lock:
            self._counter += 1
            link = Link(self._counter, client_writer, server_writer)
            link.resumed.set()
            self.links.append(link)
        await asyncio.gather(
            self._pump(link, client_reader, server_writer, up=True),
            self._pump(link, server_reader, client_writer, up=False),
            return_exceptions=True,
        )
        link.closed = True
        with self._lock:
            self.links.remove(link)

    async def _pump(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        sniffed = b""
        try:
            while not link.closed:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if up and link.application_name is None and len(sniffed) < 4096:
                    sniffed += chunk
                    found = _APP_NAME.search(sniffed)
                    if found:
                        link.application_name = found.group(1).decode(errors="replace")
                while link.stalled and not link.blackholed and not link.closed:
                    await link.resumed.wait()
                if link.blackholed:
                    continue  # swallowed: the other side never hears of it
                if self.delay:
                    await asyncio.sleep(self.delay)
                if up:
                    link.bytes_up += len(chunk)
                else:
                    link.bytes_down += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not link.blackholed and not link.closed:
                # A clean end on one side ends the other too.
                try:
                    writer.close()
                except OSError:
                    pass
