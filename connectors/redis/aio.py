"""A Redis sink's reads on an event loop: one pipelined connection.

The read API answers a get by id with one ``MGET``
(:meth:`RedisReads.afetch <connectors.redis.reads.RedisReads.afetch>`).
Through redis-py's asyncio client that call cost about 80 µs of the
server's CPU (its connection pool, locks and streams) where the round trip
itself takes about 30: :class:`Pipelined` is that round trip. It keeps one
connection per event loop; each command is written as it comes, and the
replies, which Redis sends in the order of the commands, go to the callers
in that order, parsed by hiredis; a caller that leaves (its task
cancelled) keeps its place, and its reply is dropped. A connection that
fails (lost, a reply later than ``timeout_s``, a reply that cannot be
read) fails every command in flight on it; the next command opens a new
one.

It connects as the sink's redis-py clients do: the URL (parsed by
redis-py), the user and password (``AUTH``), TLS with the sink's CA,
verification and client certificate, the database (``SELECT``), and
``timeout_s`` for the connection and for each reply. Its errors are
redis-py's exception types, made by redis-py's own parser from Redis's
error replies, so :func:`~connectors.redis.store.classify` maps them as it
maps the blocking client's. A URL that sets any other client option in its
query (``?ssl_cert_reqs=...``) is read by redis-py's own asyncio client
instead (:func:`handles`), so no setting is ever ignored.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

import hiredis
import redis.exceptions as rex
from redis._parsers import BaseParser
from redis.asyncio.connection import parse_url

from connectors.redis import RedisSinkConfig

#: what :func:`redis.asyncio.connection.parse_url` may return that this
#: client reads; any other key is an option only redis-py's client applies
_READ = frozenset({"host", "port", "db", "username", "password", "path"})
_CONNECTION_CLASS = "connection_class"  # the scheme (TLS, unix), read too


def handles(cfg: RedisSinkConfig) -> bool:
    """Whether :class:`Pipelined` applies every setting of ``cfg``."""
    return set(parse_url(cfg.client_url())) <= _READ | {_CONNECTION_CLASS}


class _Replies(asyncio.Protocol):
    """One connection: hands each reply to the oldest command waiting."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(
            protocolError=rex.InvalidResponse,
            replyError=BaseParser.parse_error,
            encoding="utf-8",
        )
        #: the commands written and not answered yet, oldest first (a
        #: caller that left has its future cancelled: its reply is dropped)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        #: why the connection can take no more commands
        self.failed: rex.RedisError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are no subclasses of asyncio's).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                if not self.waiting:
                    self.fail(rex.ConnectionError("a reply no command asked for"))
                    return
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except Exception as exc:  # noqa: BLE001 (the stream is out of step)
            self.fail(rex.ConnectionError(f"unreadable reply from redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc is not None else ""
        self.fail(rex.ConnectionError(f"connection to redis lost{why}"))

    def fail(self, error: rex.RedisError) -> None:
        """Fail every command waiting and close the connection."""
        if self.failed is None:
            self.failed = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, args: tuple[str, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        # (the stub types the tuple as one element; it takes any number)
        self.transport.write(hiredis.pack_command(args))  # type: ignore[arg-type]
        return future


class Pipelined:
    """Commands to a Redis sink's server on the running event loop (one
    loop: make one per loop). ``await execute(...)`` raises redis-py's
    exceptions: the server's error reply, ``ConnectionError`` (refused,
    lost, TLS), ``TimeoutError`` (no connection or reply in ``timeout_s``).
    """

    def __init__(self, cfg: RedisSinkConfig) -> None:
        self.cfg = cfg
        self._conn: _Replies | None = None
        self._connecting: asyncio.Lock | None = None

    async def mget(self, keys: list[str]) -> list[str | None]:
        """``MGET keys``: each key's value, None where it has none."""
        reply = await self.execute("MGET", *keys)
        assert isinstance(reply, list)
        return reply

    async def execute(self, *args: str) -> Any:
        """Send one command and wait for its reply."""
        conn = self._conn
        if conn is None or conn.failed is not None:
            conn = await self._connect()
        return await self._reply(conn, conn.send(args))

    async def aclose(self) -> None:
        """Close the connection (commands in flight fail). Safe twice."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(rex.ConnectionError("redis client closed"))

    async def _reply(self, conn: _Replies, future: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                reply = await future
        except TimeoutError:
            # (A caller gone keeps its place: its late reply is dropped.) A
            # connection silent this long is taken for dead, as redis-py
            # takes it: the commands behind it fail now, the next opens anew.
            error = rex.TimeoutError(f"no reply from redis in {self.cfg.timeout_s}s")
            conn.fail(error)
            raise error from None
        if isinstance(reply, rex.RedisError):
            raise reply
        return reply

    async def _connect(self) -> _Replies:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and conn.failed is None:
                return conn  # another command connected meanwhile
            try:
                async with asyncio.timeout(self.cfg.timeout_s):
                    conn = await self._open()
            except TimeoutError:
                raise rex.TimeoutError(
                    f"no connection to redis in {self.cfg.timeout_s}s"
                ) from None
            except OSError as exc:  # refused, TLS (the cause names it)
                raise rex.ConnectionError(f"cannot connect to redis: {exc}") from exc
            self._conn = conn
            return conn

    async def _open(self) -> _Replies:
        """A connection, logged in and on the URL's database."""
        url = parse_url(self.cfg.client_url())
        options = self.cfg.client_options()
        loop = asyncio.get_running_loop()
        conn: _Replies
        if "path" in url:
            _t, conn = await loop.create_unix_connection(_Replies, url["path"])
        else:
            host, port = url.get("host", "localhost"), url.get("port", 6379)
            context = self._tls() if self.cfg.secure else None
            _t, conn = await loop.create_connection(
                _Replies,
                host,
                port,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
        try:
            user = options.get("username", url.get("username"))
            password = options.get("password", url.get("password"))
            if password is not None:
                login = ("AUTH", user, password) if user else ("AUTH", password)
                await self._reply(conn, conn.send(login))
            if url.get("db"):
                await self._reply(conn, conn.send(("SELECT", str(url["db"]))))
        except BaseException:
            conn.fail(rex.ConnectionError("redis connection not set up"))
            raise
        return conn

    def _tls(self) -> ssl.SSLContext:
        """The TLS settings redis-py's clients take from the sink's."""
        cfg = self.cfg
        context = ssl.create_default_context(
            cafile=str(cfg.ca_cert) if cfg.ca_cert is not None else None
        )
        if not cfg.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cfg.client_cert is not None and cfg.client_key is not None:
            context.load_cert_chain(str(cfg.client_cert), str(cfg.client_key))
        return context
