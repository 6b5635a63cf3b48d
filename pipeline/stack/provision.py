"""Install what the local stack runs, from the registries this machine reaches.

Everything is cached under one directory (``stack.cache_dir``) so that the
next ``readside stack up`` — and the next CI run on the same machine — finds
it; each step leaves a ``.complete`` marker only after it finished, so an
interrupted download is redone rather than trusted.

* PostgreSQL 15 and Redis 7: Debian packages (``apt-get``), when missing.
* Kafka broker + Connect runtime: jars resolved by Maven from Central.
* Debezium PostgreSQL connector: jars resolved by Maven, as a Connect plugin.
* Elasticsearch: the integ-test-zip distribution, resolved by Maven.
* Apicurio Registry (the schema registry of ``kafka.format: avro``): its
  runnable app zip, resolved by Maven; its Avro converter for Connect, as a
  second plugin beside Debezium's.
* FerretDB v1: module source from the Go module proxy, built with ``go``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

from pipeline.errors import FatalError

T = TypeVar("T")

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
DEBEZIUM_VERSION = "3.6.3.Final"
ELASTICSEARCH_VERSION = "8.19.21"
FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
#: The newest Apicurio Registry with a runnable distribution on Maven Central
#: (3.x publishes none there).
APICURIO_VERSION = "2.6.13.Final"


@dataclass(frozen=True)
class Installed:
    """Where the provisioned pieces live."""

    kafka_libs: Path
    plugin_path: Path
    elasticsearch_home: Path
    registry_jar: Path
    ferretdb: Path
    postgres_bin: Path
    redis_server: Path


def default_cache_dir() -> Path:
    """A cache every user of the stack can read (services run unprivileged)."""
    if os.geteuid() == 0:
        return Path("/var/cache/readside")
    return Path.home() / ".cache" / "readside"


_FALLBACKS = {"go": "/usr/local/go/bin/go", "mvn": "/usr/share/maven/bin/mvn"}


def _tool(name: str) -> str:
    """A build tool from PATH, or where this machine's image puts it."""
    found = shutil.which(name)
    if found:
        return found
    fallback = _FALLBACKS.get(name)
    if fallback and Path(fallback).exists():
        return fallback
    raise FatalError(f"'{name}' is needed to provision the stack but is not on PATH")


def _run(
    cmd: list[str],
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    logger.info("provision step=%s log=%s", " ".join(cmd[:3]), log)
    with log.open("ab") as out:
        proc = subprocess.run(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        )
    if proc.returncode != 0:
        raise FatalError(
            f"'{' '.join(cmd)}' failed (exit {proc.returncode}); see {log}"
        )


def _pom(name: str) -> Path:
    ref = resources.files("pipeline.stack") / "maven" / name / "pom.xml"
    return Path(str(ref))


def _maven_copy(pom: Path, dest: Path, log: Path) -> None:
    if (dest / ".complete").exists():
        return
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    goal = "dependency:copy-dependencies"
    cmd = [_tool("mvn"), "-B", "-q", "-f", str(pom), goal]
    _run([*cmd, f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"], log)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    (dest / ".complete").touch()


def _pom_tag(name: str) -> str:
    """A short hash of a pom, so that editing it invalidates the cache."""
    import hashlib

    return hashlib.sha256(_pom(name).read_bytes()).hexdigest()[:8]


def kafka_libs(cache: Path, log: Path) -> Path:
    dest = cache / f"kafka-{KAFKA_VERSION}-{_pom_tag('kafka')}"
    _maven_copy(_pom("kafka"), dest, log)
    return dest


def debezium_plugin(cache: Path, log: Path) -> Path:
    plugin_path = (
        cache / "connect-plugins" / f"{DEBEZIUM_VERSION}-{_pom_tag('debezium')}"
    )
    _maven_copy(_pom("debezium"), plugin_path / "debezium-connector-postgres", log)
    return plugin_path


def _maven_unzip(artifact: str, home: Path, top: str | None, log: Path) -> None:
    """Download a zip artifact with Maven and unpack it as ``home``.

    ``top`` is the zip's top-level folder to keep, or ``None`` when the zip
    has none.
    """
    with tempfile.TemporaryDirectory(dir=home.parent) as tmp:
        _run(
            [
                _tool("mvn"),
                "-B",
                "-q",
                "dependency:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={tmp}",
            ],
            log,
        )
        (archive,) = Path(tmp).glob("*.zip")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        shutil.rmtree(home, ignore_errors=True)
        (unpacked / top if top else unpacked).rename(home)


def elasticsearch(cache: Path, log: Path) -> Path:
    home = cache / f"elasticsearch-{ELASTICSEARCH_VERSION}"
    if (home / ".complete").exists():
        return home
    art = (
        "org.elasticsearch.distribution.integ-test-zip:elasticsearch:"
        f"{ELASTICSEARCH_VERSION}:zip"
    )
    _maven_unzip(art, home, f"elasticsearch-{ELASTICSEARCH_VERSION}", log)
    for sub in ("bin", "jdk/bin"):
        for f in (home / sub).glob("*"):
            f.chmod(0o755)
    (home / ".complete").touch()
    return home


def _registry_jar(cache: Path) -> Path:
    home = cache / f"apicurio-registry-{APICURIO_VERSION}"
    return home / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"


def apicurio_registry(cache: Path, log: Path) -> Path:
    """Apicurio Registry's runnable app (Quarkus runner jar and its lib/)."""
    jar = _registry_jar(cache)
    if (jar.parent / ".complete").exists():
        return jar
    art = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:zip:all"
    _maven_unzip(art, jar.parent, None, log)
    (jar.parent / ".complete").touch()
    return jar


def _converter_dir(plugin_path: Path) -> Path:
    """Apicurio's converter sits in Debezium's plugin path, so that a Connect
    started with that one path finds both."""
    return plugin_path / f"apicurio-converter-{APICURIO_VERSION}-{_pom_tag('apicurio')}"


def apicurio_converter(cache: Path, log: Path) -> Path:
    dest = _converter_dir(locate(cache).plugin_path)
    _maven_copy(_pom("apicurio"), dest, log)
    return dest


def ferretdb(cache: Path, log: Path) -> Path:
    binary = cache / "bin" / f"ferretdb-{FERRETDB_VERSION}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-mod=mod")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        # `go install mod@version` asks the proxy for the module's version list
        # (a deprecation check), which it refuses for this module; downloading
        # the exact version works, and the build needs a writable copy with the
        # version file its release process would have generated.
        _run(
            [_tool("go"), "mod", "init", "readside.local/ferretdb"],
            log,
            cwd=work,
            env=env,
        )
        out = subprocess.run(
            [
                _tool("go"),
                "mod",
                "download",
                "-json",
                f"{FERRETDB_MODULE}@{FERRETDB_VERSION}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode != 0:
            log.open("a").write(out.stdout + out.stderr)
            raise FatalError(f"go mod download of FerretDB failed; see {log}")
        import json

        src_dir = Path(json.loads(out.stdout)["Dir"])
        src = work / "src"
        shutil.copytree(src_dir, src)
        for p in src.rglob("*"):
            p.chmod(p.stat().st_mode | 0o200)
        (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        _run(
            [
                _tool("go"),
                "build",
                "-trimpath",
                "-o",
                str(binary) + ".partial",
                "./cmd/ferretdb",
            ],
            log,
            cwd=src,
            env=env,
        )
    Path(str(binary) + ".partial").rename(binary)
    return binary


def _postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name),
        reverse=True,
    )
    good = [p.parent for p in found if int(p.parent.parent.name) >= 15]
    return good[0] if good else None


def debian_packages(log: Path) -> tuple[Path, Path]:
    """PostgreSQL (15 or newer) and Redis server binaries (and ``openssl``),
    installed if missing."""
    wanted = []
    pg_bin = _postgres_bin()
    if pg_bin is None or not (pg_bin.parent / "lib" / "pgoutput.so").exists():
        wanted.append("postgresql-15")
    if shutil.which("redis-server") is None:
        wanted.append("redis-server")
    if shutil.which("openssl") is None:  # the stack's certificates (stack/tls.py)
        wanted.append("openssl")
    if wanted:
        if os.geteuid() != 0:
            raise FatalError(f"missing Debian packages {wanted}; install them as root")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update", "-q"], log, env=env)
        _run(["apt-get", "install", "-y", "-q", *wanted], log, env=env)
    pg = _postgres_bin()
    redis = shutil.which("redis-server")
    if pg is None or redis is None:
        raise FatalError("PostgreSQL or Redis server still missing after install")
    return pg, Path(redis)


def provision(
    cache: Path, logs: Path, progress: Callable[[str], None] = lambda _m: None
) -> Installed:
    """Install everything (idempotent); downloads run concurrently.

    ``progress`` hears about each step that has work to do (a cold cache
    takes minutes: Maven downloads and the FerretDB build), with its time.
    """
    from concurrent.futures import ThreadPoolExecutor

    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "provision.log"

    def step(name: str, done: Path, fn: Callable[[], T]) -> T:
        if done.exists():
            return fn()
        progress(f"provisioning {name} (log: {log})")
        start = time.monotonic()
        out = fn()
        progress(f"provisioned {name} in {time.monotonic() - start:.0f}s")
        return out

    installed = locate(cache)
    with ThreadPoolExecutor(max_workers=7) as pool:
        debs = pool.submit(debian_packages, log)
        kafka = pool.submit(
            step,
            f"Kafka {KAFKA_VERSION} (Maven)",
            installed.kafka_libs / ".complete",
            lambda: kafka_libs(cache, log),
        )
        plugin = pool.submit(
            step,
            f"Debezium {DEBEZIUM_VERSION} (Maven)",
            installed.plugin_path / "debezium-connector-postgres" / ".complete",
            lambda: debezium_plugin(cache, log),
        )
        es = pool.submit(
            step,
            f"Elasticsearch {ELASTICSEARCH_VERSION} (Maven)",
            installed.elasticsearch_home / ".complete",
            lambda: elasticsearch(cache, log),
        )
        registry = pool.submit(
            step,
            f"Apicurio Registry {APICURIO_VERSION} (Maven)",
            installed.registry_jar.parent / ".complete",
            lambda: apicurio_registry(cache, log),
        )
        converter = pool.submit(
            step,
            f"Apicurio Avro converter {APICURIO_VERSION} (Maven)",
            _converter_dir(installed.plugin_path) / ".complete",
            lambda: apicurio_converter(cache, log),
        )
        ferret = pool.submit(
            step,
            f"FerretDB {FERRETDB_VERSION} (go build)",
            installed.ferretdb,
            lambda: ferretdb(cache, log),
        )
        pg, redis = debs.result()
        converter.result()
        return Installed(
            kafka_libs=kafka.result(),
            plugin_path=plugin.result(),
            elasticsearch_home=es.result(),
            registry_jar=registry.result(),
            ferretdb=ferret.result(),
            postgres_bin=pg,
            redis_server=redis,
        )


def locate(cache: Path) -> Installed:
    """Where :func:`provision` puts things, without installing anything."""
    return Installed(
        kafka_libs=cache / f"kafka-{KAFKA_VERSION}-{_pom_tag('kafka')}",
        plugin_path=cache
        / "connect-plugins"
        / f"{DEBEZIUM_VERSION}-{_pom_tag('debezium')}",
        elasticsearch_home=cache / f"elasticsearch-{ELASTICSEARCH_VERSION}",
        registry_jar=_registry_jar(cache),
        ferretdb=cache / "bin" / f"ferretdb-{FERRETDB_VERSION}",
        postgres_bin=_postgres_bin() or Path("/usr/lib/postgresql/15/bin"),
        redis_server=Path(shutil.which("redis-server") or "/usr/bin/redis-server"),
    )
