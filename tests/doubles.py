"""Test doubles for faults a real ComfyUI can't be made to show on demand."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """TEST DOUBLE: a TCP proxy in front of ComfyUI that forwards everything. :meth:`cut` drops every open
    websocket connection (HTTP connections are left alone; reconnects go through again); :meth:`shutdown`
    drops everything and refuses new connections, as a crashed ComfyUI would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._ws_writers: set[asyncio.StreamWriter] = set()
        self._all_writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._all_writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        await self._server.wait_closed()

    async def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._ws_writers):
            writer.transport.abort()
        self._ws_writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._all_writers.add(writer)
            first = await reader.read(65536)
            if first.startswith(b"GET /ws"):
                self._ws_writers.add(writer)
                self._ws_writers.add(up_writer)
            up_writer.write(first)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._ws_writers.discard(writer)
            self._all_writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()
