"""``readside serve`` as a real subprocess on a free port, for the API tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness import REPO, Pipeline, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path
    base: str
    #: what clients trust: the CA file of an HTTPS server (api.tls_cert)
    verify: ssl.SSLContext | bool = True

    def client(self, **kw: Any) -> httpx.Client:
        kw.setdefault("verify", self.verify)
        return httpx.Client(base_url=self.base, timeout=30, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM; returns the exit code (the server drains and closes)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def start_server(
    p: Pipeline, api: dict[str, Any] | None = None, ca: Path | None = None
) -> Server:
    """Write ``api`` into the pipeline's config and start ``readside serve``
    (HTTPS when ``api`` names a ``tls_cert``: its clients trust ``ca``)."""
    port = free_port()
    p.rewrite(lambda d: d.update(api={"port": port, **(api or {})}))
    log = p.tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "--config",
                str(p.config_path),
                "serve",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    scheme = "https" if (api or {}).get("tls_cert") else "http"
    verify = True if ca is None else ssl.create_default_context(cafile=str(ca))
    server = Server(proc, log, f"{scheme}://127.0.0.1:{port}", verify)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"readside serve exited:\n{server.log_text()}")
        try:
            got = httpx.get(server.base + "/healthz", timeout=2, verify=server.verify)
            return got.status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "readside serve to answer /healthz")
    return server
