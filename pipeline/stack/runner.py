"""``readside stack up | down | status``: start, stop and probe the services.

State lives under the stack's data directory: ``run/<service>.pid`` for the
processes ``up`` started (``down`` stops only those), ``logs/<service>.log``
for their output.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import client_secrets, keycloak, opensearch, provision
from pipeline.stack.jvm import SERVICE_ORDER
from pipeline.stack.services import (
    Context,
    Service,
    cache_dir,
    ensure_service_user,
    port_in_use,
)

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 240.0

#: Services that ``up`` starts only when asked (``stack up --with NAME``),
#: with what installs each; ``status`` shows one once started, ``down``
#: stops it with the rest.
OPTIONAL: dict[str, tuple[type[Service], Callable[[Path, Path], Path]]] = {
    "opensearch": (opensearch.OpenSearch, opensearch.provision),
}
#: default services installed beside :func:`provision.provision`'s (cache,
#: log) -> home
PROVISIONED: list[tuple[str, Callable[[Path, Path], Path]]] = [
    ("keycloak", keycloak.provision),
]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    running: bool
    problem: str | None  # None = healthy

    @property
    def healthy(self) -> bool:
        return self.running and self.problem is None


def data_dir(cfg: StackConfig) -> Path:
    """The stack's data directory.

    PostgreSQL and Elasticsearch run as an unprivileged user, which must be
    able to enter every parent of their data. When root's chosen directory
    sits below one it cannot enter (``/root/...``, pytest's tmp), the data goes
    to ``/var/lib/readside/`` under a name derived from the chosen path.
    """
    chosen = Path(os.path.expanduser(cfg.data_dir)).resolve()
    if os.geteuid() != 0 or _traversable(chosen):
        return chosen
    import hashlib

    tag = hashlib.sha256(str(chosen).encode()).hexdigest()[:10]
    return Path("/var/lib/readside") / f"{chosen.name}-{tag}"


def _traversable(path: Path) -> bool:
    """Whether every existing ancestor lets other users pass through."""
    for parent in path.parents:
        try:
            if not parent.stat().st_mode & 0o001:
                return False
        except FileNotFoundError:
            continue
    return True


def _pidfile(ctx: Context, name: str) -> Path:
    return ctx.data / "run" / f"{name}.pid"


def _read_pid(ctx: Context, name: str) -> int | None:
    try:
        pid = int(_pidfile(ctx, name).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if state == "Z":  # exited; reap it if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return None
    return pid


def context(
    cfg: StackConfig, install: bool, progress: Callable[[str], None] = print
) -> Context:
    data = data_dir(cfg)
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)
    (data / "logs").mkdir(exist_ok=True)
    (data / "run").mkdir(exist_ok=True)
    if install:
        installed = provision.provision(cache_dir(cfg), data / "logs", progress)
    else:
        installed = provision.locate(cache_dir(cfg))
    return Context(cfg=cfg, data=data, installed=installed)


def services(ctx: Context, optional: bool = False) -> list[Service]:
    """The default stack's services, and with ``optional`` those of
    :data:`OPTIONAL` too."""
    extra = [cls for cls, _ in OPTIONAL.values()] if optional else []
    return [cls(ctx) for cls in [*SERVICE_ORDER, *extra]]


def _started(ctx: Context, svc: Service) -> bool:
    """Whether an optional service was started: its pid file is there (even
    if the process died) or something answers on its port."""
    return _pidfile(ctx, svc.name).exists() or port_in_use(svc.port)


def status(cfg: StackConfig) -> list[ServiceStatus]:
    """Each service's health, found by probing its configured port.

    A service counts as running when the process of its pid file lives or
    something answers on its port: ``stack status`` run from another
    directory (whose relative data directory holds no pid files) still
    reports the running stack. ``pid`` stays that of the pid file (None
    without one), the process ``down`` would stop. Creates nothing on disk.
    """
    data = data_dir(cfg)
    ctx = Context(cfg=cfg, data=data, installed=provision.locate(cache_dir(cfg)))
    svcs = [
        s
        for s in services(ctx, optional=True)
        if s.name not in OPTIONAL or _started(ctx, s)
    ]

    def one(svc: Service) -> ServiceStatus:
        pid = _read_pid(ctx, svc.name)
        running = pid is not None or port_in_use(svc.port)
        problem = svc.probe() if running else "not running"
        return ServiceStatus(svc.name, svc.port, pid, running, problem)

    with ThreadPoolExecutor(max_workers=len(svcs)) as pool:
        return list(pool.map(one, svcs))


def _start(ctx: Context, svc: Service) -> int:
    for port in svc.ports:
        if port_in_use(port):
            raise FatalError(
                f"cannot start {svc.name}: port {port} is already in use by another "
                f"process (set stack.{svc.name}_port or free the port)"
            )
    svc.prepare()
    log = (ctx.logs / f"{svc.name}.log").open("ab")
    proc = subprocess.Popen(
        svc.command(),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=svc.env(),
        cwd=ctx.data,
        start_new_session=True,
    )
    _pidfile(ctx, svc.name).write_text(f"{proc.pid}\n")
    logger.info("started service=%s pid=%d port=%d", svc.name, proc.pid, svc.port)
    return proc.pid


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


#: how long a service that was already running may ask for a restart before
#: ``stack up`` gives up on it (:func:`_wait_healthy`)
RESTART_GRACE_S = 5.0


def _wait_healthy(
    ctx: Context, svc: Service, timeout: float, running_before: bool = False
) -> None:
    """Wait until ``svc`` is healthy. A service that was running before this
    start and whose probe asks for a restart (it runs with the settings of
    an older readside) fails within :data:`RESTART_GRACE_S` (time for one
    still starting to open its ports), saying so, instead of at the timeout."""
    restart_by = time.monotonic() + RESTART_GRACE_S
    deadline = time.monotonic() + timeout
    problem: str | None = "not probed"
    while time.monotonic() < deadline:
        if _read_pid(ctx, svc.name) is None:
            log = ctx.logs / (svc.name + ".log")
            raise FatalError(
                f"{svc.name} exited during start; see {log}; its last lines:\n"
                + _tail(log, 8)
            )
        problem = svc.probe()
        if problem is None:
            return
        if (
            running_before
            and problem.endswith(f"restart {svc.name}")
            and time.monotonic() > restart_by
        ):
            raise FatalError(
                f"{svc.name} was already running, with settings this readside "
                f"changed ({problem}): `readside stack down` then `readside "
                "stack up` starts it with the new ones"
            )
        time.sleep(0.5)
    raise FatalError(
        f"{svc.name} not healthy after {timeout:.0f}s ({problem}); see "
        f"{ctx.logs / (svc.name + '.log')}"
    )


def up(
    cfg: StackConfig,
    progress: Callable[[str], None] = print,
    with_: tuple[str, ...] = (),
) -> list[str]:
    """Provision and start every service that is not already up; idempotent.

    ``with_`` names optional services (:data:`OPTIONAL`) to provision and
    start as well. Returns the names of the services this call started.
    """
    unknown = sorted(set(with_) - set(OPTIONAL))
    if unknown:
        raise FatalError(
            f"unknown optional service(s) {unknown}; known: {sorted(OPTIONAL)}"
        )
    t0 = time.monotonic()
    ensure_service_user()
    ctx = context(cfg, install=True, progress=progress)
    for name, install in [*PROVISIONED, *((n, OPTIONAL[n][1]) for n in with_)]:
        t1 = time.monotonic()
        if name == keycloak.Keycloak.name and not keycloak.provisioned(cache_dir(cfg)):
            progress(f"provisioning {name} (log: {ctx.logs / 'provision.log'})")
        install(cache_dir(cfg), ctx.logs / "provision.log")
        if (took := time.monotonic() - t1) > 1:
            progress(f"provisioned {name} in {took:.1f}s")
    progress(f"provisioned in {time.monotonic() - t0:.1f}s (cache {cache_dir(cfg)})")
    svcs = [
        s
        for s in services(ctx, optional=True)
        if s.name not in OPTIONAL or s.name in with_
    ]
    # Check every port first, so a conflict starts nothing at all.
    taken = [
        f"port {port} ({svc.name})"
        for svc in svcs
        if _read_pid(ctx, svc.name) is None
        for port in svc.ports
        if port_in_use(port)
    ]
    if taken:
        raise FatalError(
            "cannot start the stack: " + ", ".join(taken) + " already in use by "
            "another process; free it or choose other ports in the stack section"
        )
    # A service starts once those it needs are healthy and ready (Kafka
    # Connect needs Kafka, FerretDB its PostgreSQL, the registry Keycloak);
    # everything else starts at once.
    futures: dict[str, Future[bool]] = {}

    def bring(svc: Service) -> bool:
        """Start ``svc`` unless it runs; wait for it; whether it was started."""
        for need in svc.needs:
            if need in futures:
                futures[need].result()
        running = _read_pid(ctx, svc.name) is not None
        if not running:
            _start(ctx, svc)
        _wait_healthy(ctx, svc, START_TIMEOUT_S, running)
        svc.ready()
        progress(f"{svc.name:<17} healthy")
        return not running

    with ThreadPoolExecutor(max_workers=len(svcs)) as pool:
        # in the order of SERVICE_ORDER, where each service comes after
        # those it needs: their futures are there when it looks
        for svc in svcs:
            futures[svc.name] = pool.submit(bring, svc)
        started = [name for name, fut in futures.items() if fut.result()]
    if client_secrets.export(ctx.data):
        progress(f"clients' passwords in {ctx.data / client_secrets.SECRETS_DIR}")
    progress(f"stack up in {time.monotonic() - t0:.1f}s; data in {ctx.data}")
    return started


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` is left."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _stop(ctx: Context, name: str, pid: int, timeout: float = 60.0) -> None:
    """Signal the service's process group (its ``stop_signal``: SIGTERM, or
    SIGINT for PostgreSQL's fast shutdown) and wait until every process of
    it is gone, not only its leader: the leader (``runuser``) exits at once
    while the server it started is still closing and holding its ports, and
    a start right after would find them taken."""
    known = [s for s in services(ctx, optional=True) if s.name == name]
    try:
        os.killpg(pid, known[0].stop_signal if known else signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        _read_pid(ctx, name) is not None or _group_alive(pid)
    ):
        time.sleep(0.2)
    if _read_pid(ctx, name) is not None or _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _pidfile(ctx, name).unlink(missing_ok=True)


def down(cfg: StackConfig, progress: Callable[[str], None] = print) -> list[str]:
    """Stop the services ``up`` started: each once every service that needs
    or uses it has stopped (:attr:`Service.needs`, :attr:`Service.uses`),
    the others at once. Returns the names of those stopped, in reverse
    start order."""
    ctx = context(cfg, install=False)
    svcs = list(reversed(services(ctx, optional=True)))
    stopped: set[str] = set()
    futures: dict[str, Future[None]] = {}

    def halt(svc: Service, first: list[Future[None]]) -> None:
        for fut in first:
            fut.result()
        pid = _read_pid(ctx, svc.name)
        if pid is None:
            _pidfile(ctx, svc.name).unlink(missing_ok=True)
            return
        _stop(ctx, svc.name, pid)
        stopped.add(svc.name)
        progress(f"{svc.name:<17} stopped")

    with ThreadPoolExecutor(max_workers=len(svcs)) as pool:
        # in reverse start order, where each service comes before those it
        # needs or uses: their futures are there when one looks
        for svc in svcs:
            first = [
                futures[o.name]
                for o in svcs
                if o.name in futures and svc.name in (*o.needs, *o.uses)
            ]
            futures[svc.name] = pool.submit(halt, svc, first)
        for fut in futures.values():
            fut.result()
    return [s.name for s in svcs if s.name in stopped]


def stop_service(cfg: StackConfig, name: str) -> None:
    """Stop one service (tests use it to simulate an outage)."""
    ctx = context(cfg, install=False)
    pid = _read_pid(ctx, name)
    if pid is not None:
        _stop(ctx, name, pid)


def start_service(cfg: StackConfig, name: str) -> None:
    """Start one stopped service again and wait until healthy."""
    ctx = context(cfg, install=False)
    svc = next(s for s in services(ctx, optional=True) if s.name == name)
    if _read_pid(ctx, name) is None:
        _start(ctx, svc)
    _wait_healthy(ctx, svc, START_TIMEOUT_S)
    svc.ready()


def log_path(cfg: StackConfig, name: str) -> Path:
    return data_dir(cfg) / "logs" / f"{name}.log"
