"""A link to PostgreSQL that a test can cut: the database away for one client, for real
(connections reset, new ones refused), the server itself untouched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class CuttableLink:
    """A Unix-socket relay between a node and PostgreSQL that the test can cut (every
    connection reset, new ones refused) and mend: the database is away for that node only."""

    def __init__(self, dsn: str, directory: Path) -> None:
        query = parse_qs(urlsplit(dsn).query)
        host, port = query["host"][0], query["port"][0]
        self.target = f"{host}/.s.PGSQL.{port}"
        self.path = str(directory / f".s.PGSQL.{port}")
        self.dsn = dsn.replace(f"host={host}", f"host={directory}")
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> CuttableLink:
        await self.mend()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.cut()  # the listening socket and every relayed connection closed

    async def mend(self) -> None:
        self.server = await asyncio.start_unix_server(self._relay, self.path)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.writers):
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)  # before the await, so a cut meanwhile closes it too
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            self.writers.discard(writer)
            return
        self.writers.add(up_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}
