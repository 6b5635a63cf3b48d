"""The services of the local stack: how each is initialised, started and probed.

Each service writes under ``<data_dir>/<name>/`` and logs to
``<data_dir>/logs/<name>.log``. Servers that refuse to run as root
(PostgreSQL, Elasticsearch) run as the unprivileged ``readside`` user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import StackConfig
from pipeline.stack.provision import Installed, default_cache_dir

SERVICE_USER = "readside"
JAVA17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
DEBEZIUM_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
APICURIO_CONVERTER_CLASS = "io.apicurio.registry.utils.converter.AvroConverter"


@dataclass(frozen=True)
class Context:
    cfg: StackConfig
    data: Path
    installed: Installed

    def dir(self, name: str) -> Path:
        return self.data / name

    @property
    def logs(self) -> Path:
        return self.data / "logs"


def cache_dir(cfg: StackConfig) -> Path:
    """Where ``provision`` keeps what it installs (``stack.cache_dir``)."""
    if cfg.cache_dir:
        return Path(os.path.expanduser(cfg.cache_dir)).resolve()
    return default_cache_dir()


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin/java").exists():
        return str(Path(home, "bin/java"))
    if (JAVA17 / "bin/java").exists():
        return str(JAVA17 / "bin/java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError("no java on PATH and JAVA_HOME not set")
    return found


def http_json(
    url: str,
    timeout: float = 3.0,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[object, dict[str, str]]:
    """A GET's JSON answer and headers (``context``: an ``https://`` URL's
    TLS; ``headers``: its credentials)."""
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
        return json.loads(resp.read() or b"null"), dict(resp.headers)


#: How long a health probe lets a search node's cluster become yellow: an
#: index is red from its creation until its primary shard starts.
CLUSTER_HEALTH_WAIT_S = 5


def cluster_health(
    port: int,
    url: str | None = None,
    context: ssl.SSLContext | None = None,
    auth: dict[str, str] | None = None,
) -> tuple[str | None, dict[str, str]]:
    """A search node's cluster status (``green``, ``yellow``, ``red``) and the
    answer's headers, after waiting up to :data:`CLUSTER_HEALTH_WAIT_S` for
    yellow, so that an index being created is not taken for a broken node.

    ``url`` is the node's (default ``http://127.0.0.1:<port>``); ``context``
    and ``auth`` (headers) are :func:`http_json`'s ``context`` and ``headers``.

    Raises:
        OSError, ValueError: the node did not answer, or not in JSON.
    """
    query = (
        f"{url or f'http://127.0.0.1:{port}'}/_cluster/health"
        f"?wait_for_status=yellow&timeout={CLUSTER_HEALTH_WAIT_S}s"
    )
    try:
        health, headers = http_json(
            query, CLUSTER_HEALTH_WAIT_S + 3, context=context, headers=auth
        )
    except urllib.error.HTTPError as exc:
        if exc.code != 408:  # 408: the wait ended, the cluster still red
            raise
        with exc:
            health, headers = json.loads(exc.read() or b"null"), dict(exc.headers)
    status = health.get("status") if isinstance(health, dict) else None
    return (str(status) if status else None), headers


def ensure_service_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        subprocess.run(["id", "-u", SERVICE_USER], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )


def as_service_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SERVICE_USER, "--", *cmd]


def chown_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(
            ["chown", "-R", f"{SERVICE_USER}:{SERVICE_USER}", str(path)], check=True
        )


class Service(ABC):
    """One server of the stack."""

    name: str
    #: the services that must be healthy (and ready) before this one starts
    needs: tuple[str, ...] = ()
    #: the services it talks to while it runs, beside those it ``needs``:
    #: ``stack down`` stops it before any of them (its own shutdown may
    #: still use them)
    uses: tuple[str, ...] = ()
    #: what a stop sends to the service's process group
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def port(self) -> int:
        """The main port: the ``<name>_port`` setting of the stack section."""
        return int(getattr(self.ctx.cfg, f"{self.name}_port"))

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def prepare(self) -> None:
        """Create the data directory and configuration (idempotent)."""
        self.ctx.dir(self.name).mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def command(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    def probe(self) -> str | None:
        """A real health check: ``None`` when healthy, else what is wrong."""

    def ready(self) -> None:
        """What is made on the healthy server after each start (idempotent);
        nothing by default."""
        return


class Elasticsearch(Service):
    name = "elasticsearch"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.port + 100]

    def prepare(self) -> None:
        base = self.ctx.dir("elasticsearch")
        conf = base / "config"
        if not conf.exists():
            shutil.copytree(self.ctx.installed.elasticsearch_home / "config", conf)
        (conf / "elasticsearch.yml").write_text(
            "cluster.name: readside\nnode.name: readside-1\n"
            f"path.data: {base / 'data'}\npath.logs: {base / 'logs'}\n"
            f"network.host: 127.0.0.1\nhttp.port: {self.port}\n"
            f"transport.port: {self.port + 100}\ndiscovery.type: single-node\n"
            "cluster.routing.allocation.disk.threshold_enabled: false\n"
            "action.destructive_requires_name: false\n"
            "xpack.security.enabled: false\n"
        )
        (base / "data").mkdir(exist_ok=True)
        (base / "logs").mkdir(exist_ok=True)
        chown_service_user(base)

    def command(self) -> list[str]:
        return as_service_user(
            [str(self.ctx.installed.elasticsearch_home / "bin" / "elasticsearch")]
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ES_PATH_CONF"] = str(self.ctx.dir("elasticsearch") / "config")
        env["ES_JAVA_OPTS"] = "-Xms512m -Xmx512m"
        env["JAVA_HOME"] = str(Path(java_binary()).parent.parent)
        env.pop("ES_JAVA_HOME", None)
        env["ES_JAVA_HOME"] = env["JAVA_HOME"]
        return env

    def probe(self) -> str | None:
        try:
            # The integ-test distribution has no root (GET /) handler.
            status, headers = cluster_health(self.port)
        except (OSError, ValueError) as exc:
            return f"http probe failed: {exc.__class__.__name__}"
        if headers.get("X-elastic-product") != "Elasticsearch":
            return "missing X-elastic-product header"
        return None if status in ("green", "yellow") else f"cluster health {status}"


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
