"""The load generator of ``python -m bench api``, run in a process of its own.

``python -m bench.api_load < spec.json`` opens ``concurrency`` connections
to one server and keeps one request in flight on each (HTTP/1.1 keep-alive
for the API, RESP for Redis), on one asyncio loop (uvloop), until
``requests`` requests were answered; then prints one JSON line: requests,
requests/s, p50, p99 and mean latency in ms.

The client is the same for both protocols and does little per request (a
pre-encoded request, the reply read by its length, its status checked), so
that what is measured is the server, and the HTTP API and raw Redis are
loaded the same way: same process model, same concurrency.

With ``"client": "library"`` the same process instead runs ``concurrency``
threads of the usual Python clients (one ``httpx.Client`` per thread;
``redis.Redis`` with a pool): what a Python site would see.

Spec fields: ``kind`` (``http`` or ``redis``), ``client`` (``lean``, the
default, or ``library``), ``targets`` (URL paths or Redis keys; request ``i``
asks ``targets[i % len]``), ``requests``, ``concurrency``, ``warmup``
(requests before the clock starts, default 200); for HTTP ``host``, ``port``
and ``headers``; for Redis the sink's ``url`` and ``options``
(:meth:`RedisSinkConfig.client_url <connectors.redis.RedisSinkConfig.client_url>`
and ``client_options``): both clients log in (user, password, database, TLS)
as the sink does.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.api_stats import summary

Ask = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


def http_request(path: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def redis_request(*args: str) -> bytes:
    """One command in RESP (``GET key``, ``AUTH user password`` ...)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def redis_server(
    spec: dict[str, Any],
) -> tuple[str, int, ssl.SSLContext | None, list[bytes]]:
    """Where the lean client connects to the sink's server, with what TLS,
    and the commands that log it in first (``AUTH``, ``SELECT``), as
    redis-py does of the spec's ``url`` and ``options``."""
    from redis.connection import SSLConnection, parse_url

    # redis-py leaves parse_url unannotated
    url: dict[str, Any] = parse_url(spec["url"])  # type: ignore[no-untyped-call]
    opts = {**url, **(spec.get("options") or {})}
    if "path" in opts:
        raise ValueError("the lean Redis client does not speak over a unix socket")
    tls = None
    if opts.get("connection_class") is SSLConnection:
        tls = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"))
        tls.check_hostname = bool(opts.get("ssl_check_hostname", True))
        if opts.get("ssl_cert_reqs") == "none":
            tls.verify_mode = ssl.CERT_NONE
        if opts.get("ssl_certfile"):
            tls.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"))
    login = []
    if opts.get("password"):
        user = [opts["username"]] if opts.get("username") else []
        login.append(redis_request("AUTH", *user, opts["password"]))
    if opts.get("db"):
        login.append(redis_request("SELECT", str(opts["db"])))
    return opts.get("host", "localhost"), int(opts.get("port", 6379)), tls, login


async def ask_http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> None:
    """One request; the reply must be 200 with a body of Content-Length bytes."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    if status_line.split(b" ", 2)[1] != b"200":
        raise RuntimeError(f"HTTP reply {status_line!r} to {request[:80]!r}")
    length = -1
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length <= 0:
        raise RuntimeError(f"HTTP reply without a body length: {head!r}")
    await reader.readexactly(length)


async def ask_redis(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> None:
    """One GET; the reply must be a bulk string (the key exists)."""
    writer.write(request)
    line = await reader.readuntil(b"\r\n")
    if not line.startswith(b"$") or line.startswith(b"$-1"):
        raise RuntimeError(f"redis reply {line!r} to {request!r}")
    await reader.readexactly(int(line[1:]) + 2)


async def ask_ok(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> None:
    """One command of the login; the reply must be ``+OK``."""
    writer.write(request)
    line = await reader.readuntil(b"\r\n")
    if line != b"+OK\r\n":
        raise RuntimeError(f"redis reply {line[:200]!r} to the login")


async def run(spec: dict[str, Any]) -> dict[str, float]:
    tls: ssl.SSLContext | None = None
    login: list[bytes] = []
    if spec["kind"] == "http":
        host, port = spec["host"], int(spec["port"])
        headers = spec.get("headers") or {}
        reqs = [http_request(t, f"{host}:{port}", headers) for t in spec["targets"]]
        ask: Ask = ask_http
    else:
        host, port, tls, login = redis_server(spec)
        reqs = [redis_request("GET", t) for t in spec["targets"]]
        ask = ask_redis
    concurrency = int(spec["concurrency"])
    conns = [
        await asyncio.open_connection(host, port, ssl=tls) for _ in range(concurrency)
    ]
    for reader, writer in conns:
        for command in login:
            await ask_ok(reader, writer, command)

    async def drive(total: int, latencies: list[float]) -> float:
        async def one(worker: int) -> None:
            reader, writer = conns[worker]
            for i in range(worker, total, concurrency):
                start = time.perf_counter()
                await ask(reader, writer, reqs[i % len(reqs)])
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(concurrency)))
        return time.perf_counter() - start

    await drive(int(spec.get("warmup", 200)), [])
    latencies: list[float] = []
    elapsed = await drive(int(spec["requests"]), latencies)
    for _reader, writer in conns:
        writer.close()
    return summary(latencies, elapsed)


def run_library(spec: dict[str, Any]) -> dict[str, float]:
    """The load on ``concurrency`` threads of httpx or redis-py clients."""
    import threading

    import httpx
    import redis

    from bench.api_stats import timed_calls

    targets, concurrency = spec["targets"], int(spec["concurrency"])
    local = threading.local()
    if spec["kind"] == "http":
        base = f"http://{spec['host']}:{spec['port']}"

        def call(i: int) -> None:
            if not hasattr(local, "http"):
                local.http = httpx.Client(
                    base_url=base, headers=spec.get("headers") or {}, timeout=10
                )
            resp = local.http.get(targets[i % len(targets)])
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")

    else:
        client = redis.Redis.from_url(spec["url"], **(spec.get("options") or {}))

        def call(i: int) -> None:
            if client.get(targets[i % len(targets)]) is None:
                raise RuntimeError(f"redis: no key {targets[i % len(targets)]}")

    timed_calls(call, int(spec.get("warmup", 200)), concurrency)
    return timed_calls(call, int(spec["requests"]), concurrency)


def load_in_child(spec: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    """Run one load in a new process (the spec on its stdin); its figures.

    Raises:
        RuntimeError: the load failed (a refused request, a closed connection).
    """
    cmd = [sys.executable, "-m", "bench.api_load"]
    done = subprocess.run(
        cmd,
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load exit {done.returncode}: {done.stderr[-800:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    import uvloop

    spec = json.loads(sys.stdin.read())
    if spec.get("client", "lean") == "library":
        result = run_library(spec)
    else:
        result = uvloop.run(run(spec))
    print(json.dumps({**result, "concurrency": spec["concurrency"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
