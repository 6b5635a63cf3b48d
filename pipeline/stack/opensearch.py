"""OpenSearch: an optional service of the local stack
(``readside stack up --with opensearch``), the store of ``type: opensearch``
sinks.

Maven Central publishes no OpenSearch distribution archive, only its server
modules; ``provision`` resolves the server (``org.opensearch:opensearch``)
with its libraries and the Netty 4 transport module, and lays them out as a
node's home: ``lib/`` for the server, ``modules/transport-netty4/`` and
``modules/mapper-extras/`` with the plugin descriptors (and Netty's security
policy) a distribution would carry, written here; the security plugin's zip
unpacked in ``plugins/`` (:mod:`pipeline.stack.opensearch_security`); an
empty ``bin/``. The node starts through OpenSearch's own bootstrap (security
manager, bootstrap checks in single-node mode) as the unprivileged service
user, with the security plugin on: HTTPS with the stack's certificate,
transport TLS, one internal user (see :mod:`pipeline.stack.opensearch_security`).
Its health checks go over HTTPS as that user, trusting the stack's CA.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import urllib.error
from pathlib import Path

from pipeline.stack import opensearch_security as security
from pipeline.stack.provision import _maven_copy, _pom, _pom_tag
from pipeline.stack.services import (
    Service,
    as_service_user,
    cache_dir,
    chown_service_user,
    cluster_health,
    http_json,
    java_binary,
)

#: the newest 2.19 server whose security plugin Maven Central serves
OPENSEARCH_VERSION = "2.19.4"
#: each module of the node: its plugin class and the prefixes of its jars
MODULES = {
    "transport-netty4": (
        "org.opensearch.transport.Netty4Plugin",
        ("netty-", "transport-netty4-client-"),
    ),
    # scaled_float (and the other extra field types)
    "mapper-extras": (
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        ("mapper-extras-client-",),
    ),
}


def _descriptor(name: str, classname: str) -> str:
    return (
        f"description={name}\nversion={OPENSEARCH_VERSION}\nname={name}\n"
        f"classname={classname}\njava.version=11\n"
        f"opensearch.version={OPENSEARCH_VERSION}\nextended.plugins=\n"
        "has.native.controller=false\n"
    )


#: What Netty needs beyond a plugin's default permissions: sockets for its
#: channels, its own system properties, reflection on its buffers.
_POLICY = """\
grant codeBase "${codebase.netty-common}" {
  permission java.net.SocketPermission "*", "accept,connect";
  permission java.util.PropertyPermission "*", "read,write";
};
grant codeBase "${codebase.netty-transport}" {
  permission java.net.SocketPermission "*", "accept,connect";
};
grant {
  permission java.lang.RuntimePermission "accessDeclaredMembers";
  permission java.lang.reflect.ReflectPermission "suppressAccessChecks";
};
"""

_LOG4J = """\
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
"""


def _place(jar: Path, dest: Path) -> None:
    """A hard link to the resolved jar (the cache holds it once), or a copy
    where links cannot be made."""
    try:
        os.link(jar, dest)
    except OSError:
        shutil.copy2(jar, dest)


def home(cache: Path) -> Path:
    """Where :func:`provision` lays out the node (edits of the pom move it)."""
    return cache / f"opensearch-{OPENSEARCH_VERSION}-{_pom_tag('opensearch')}"


def provision(cache: Path, log: Path) -> Path:
    """Resolve the jars (cached) and lay out the node's home; idempotent."""
    dest = home(cache)
    if (dest / ".complete").exists():
        return dest
    jars = cache / f"opensearch-jars-{OPENSEARCH_VERSION}-{_pom_tag('opensearch')}"
    _maven_copy(_pom("opensearch"), jars, log)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # the bootstrap grants itself access to bin/ and fails without one
    for folder in ("lib", "plugins", "bin", *(f"modules/{m}" for m in MODULES)):
        (tmp / folder).mkdir(parents=True)
    for jar in sorted(jars.glob("*.jar")):
        into = [m for m, (_, pre) in MODULES.items() if jar.name.startswith(pre)]
        _place(jar, (tmp / "modules" / into[0] if into else tmp / "lib") / jar.name)
    for name, (classname, _) in MODULES.items():
        module = tmp / "modules" / name
        (module / "plugin-descriptor.properties").write_text(
            _descriptor(name, classname)
        )
    (tmp / "modules" / "transport-netty4" / "plugin-security.policy").write_text(
        _POLICY
    )
    security.install(tmp, OPENSEARCH_VERSION, log)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    (dest / ".complete").touch()
    return dest


#: what ``path.data`` last held (a node refuses data of a newer version)
_DATA_VERSION = ".readside-opensearch-version"


class OpenSearch(Service):
    name = "opensearch"
    #: the security plugin on (HTTPS, transport TLS, an internal user)
    secure = True

    @property
    def ports(self) -> list[int]:
        return [self.port, self.port + 100]

    def prepare(self) -> None:
        base = self.ctx.dir(self.name)
        conf = base / "config"
        data = base / "data"
        marker = data / _DATA_VERSION
        if data.exists() and (
            not marker.exists() or marker.read_text() != OPENSEARCH_VERSION
        ):
            # another version's node (2.19.6, unsecured, before): a test
            # store, which the older server cannot read
            shutil.rmtree(data)
        for sub in (conf, data, base / "logs", base / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        marker.write_text(OPENSEARCH_VERSION)
        (conf / "opensearch.yml").write_text(
            "cluster.name: readside-opensearch\nnode.name: readside-os-1\n"
            f"path.data: {base / 'data'}\npath.logs: {base / 'logs'}\n"
            f"network.host: 127.0.0.1\nhttp.port: {self.port}\n"
            f"transport.port: {self.port + 100}\ndiscovery.type: single-node\n"
            "cluster.routing.allocation.disk.threshold_enabled: false\n"
            "action.destructive_requires_name: false\n"
            + (security.settings(self.port) if self.secure else "")
        )
        (conf / "log4j2.properties").write_text(_LOG4J)
        if self.secure:
            node = home(cache_dir(self.ctx.cfg))
            security.configure(conf, base, self.ctx.data, node, java_binary())
        chown_service_user(base)

    def command(self) -> list[str]:
        base = self.ctx.dir(self.name)
        node = home(cache_dir(self.ctx.cfg))
        return as_service_user(
            [
                java_binary(),
                "-Xms512m",
                "-Xmx512m",
                # one small heap on a shared machine: no G1 regions to size
                "-XX:+UseSerialGC",
                "-Dlog4j2.disable.jmx=true",
                f"-Djava.io.tmpdir={base / 'tmp'}",
                f"-Dopensearch.path.home={node}",
                f"-Dopensearch.path.conf={base / 'config'}",
                "-Dopensearch.distribution.type=tar",
                "-cp",
                f"{node / 'lib'}/*",
                "org.opensearch.bootstrap.OpenSearch",
            ]
        )

    def _client(self) -> tuple[str, ssl.SSLContext | None, dict[str, str]]:
        """The node's URL, TLS context and headers, as the readside user."""
        if not self.secure:
            return f"http://127.0.0.1:{self.port}", None, {}
        kept = security.client(self.ctx.data, self.port)
        context = ssl.create_default_context(cafile=str(kept["ca_cert"]))
        login = f"{kept['username']}:{kept['password']}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(login).decode()}
        return f"https://127.0.0.1:{self.port}", context, auth

    def probe(self) -> str | None:
        """Root and cluster health as the readside user over HTTPS; from
        another directory, which has no credentials, only that the node
        answers HTTPS and asks for them (401)."""
        try:
            url, context, auth = self._client()
        except FileNotFoundError:
            return self._asks_for_credentials()
        try:
            root, _ = http_json(url + "/", context=context, headers=auth)
            status, _ = cluster_health(self.port, url, context, auth)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None)
            if isinstance(reason, ssl.SSLError):
                # a node started before its security plugin answers plain HTTP
                return f"https probe failed ({reason.reason}): restart opensearch"
            return f"http probe failed: {exc.__class__.__name__}"
        version = root.get("version") if isinstance(root, dict) else None
        product = version.get("distribution") if isinstance(version, dict) else None
        if product != "opensearch":
            return f"not an OpenSearch node (distribution {product!r})"
        return None if status in ("green", "yellow") else f"cluster health {status}"

    def _asks_for_credentials(self) -> str | None:
        """Whether the node answers HTTPS with 401, as a secured node asks an
        anonymous client (its certificate is not checked: the stack's CA is
        in the stack's directory, which this one is not)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            http_json(f"https://127.0.0.1:{self.port}/", context=context)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return None
            return f"https probe answered {exc.code}"
        except OSError as exc:
            reason = getattr(exc, "reason", None)
            if isinstance(reason, ssl.SSLError):
                return f"https probe failed ({reason.reason}): restart opensearch"
            return f"http probe failed: {exc.__class__.__name__}"
        return "answers HTTPS without credentials: security is off"
