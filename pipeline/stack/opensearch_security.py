"""The security plugin of the stack's OpenSearch node: HTTPS, transport TLS,
one internal user.

The plugin is Maven Central's ``org.opensearch.plugin:opensearch-security``
zip, of the server's exact version (``<version>.0``), unpacked into the
node's ``plugins/opensearch-security/`` by :func:`install`. The node's
config folder gets, from :func:`configure`:

* HTTPS on the HTTP port with the stack's server certificate and CA
  (:func:`pipeline.stack.tls.stack_certs`); transport TLS with a node
  certificate of its own (server and client use, ``CN=`` :data:`NODE_DN`),
  which the plugin requires and checks against ``plugins.security.nodes_dn``;
  an admin certificate (:data:`ADMIN_DN`, ``plugins.security.authcz.admin_dn``)
  for the plugin's own tools, kept in the stack's ``tls/`` folder.
* ``opensearch-security/``: the plugin's configuration files, written here
  (HTTP basic authentication against the internal users, no anonymous
  access; one user, :data:`USER`, with a role of its own over every index
  but the plugin's, whose password is kept in :data:`CLIENT` of the node's
  data folder, and its bcrypt hash made by the plugin's ``Hasher`` tool).
  The plugin makes its security index from them on the node's first start
  (``plugins.security.allow_default_init_securityindex``); a later edit of
  them reaches the index only through the plugin's ``securityadmin`` tool
  (with the admin certificate) or a fresh data folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from pipeline.errors import FatalError
from pipeline.stack import tls
from pipeline.stack.provision import _maven_unzip

PLUGIN = "opensearch-security"
#: the readside user of the node, and where its password is kept
USER = "readside"
CLIENT = "opensearch-client.json"
NODE_DN = "CN=readside-opensearch-node"
ADMIN_DN = "CN=readside-opensearch-admin"
#: the plugin's configuration files kept as the zip ships them (no users,
#: mappings or tenants of their own that matter here)
_SHIPPED = ("action_groups", "tenants", "nodes_dn", "allowlist", "whitelist", "audit")


def install(node: Path, version: str, log: Path) -> None:
    """Unpack the plugin of server ``version`` into ``node``'s plugins."""
    art = f"org.opensearch.plugin:{PLUGIN}:{version}.0:zip"
    _maven_unzip(art, node / "plugins" / PLUGIN, None, log)


def settings(port: int) -> str:
    """The ``opensearch.yml`` lines of the plugin (files relative to the
    config folder, where :func:`configure` puts them)."""
    return (
        "plugins.security.ssl.http.enabled: true\n"
        "plugins.security.ssl.http.pemcert_filepath: http.crt\n"
        "plugins.security.ssl.http.pemkey_filepath: http.key\n"
        "plugins.security.ssl.http.pemtrustedcas_filepath: ca.crt\n"
        "plugins.security.ssl.transport.pemcert_filepath: node.crt\n"
        "plugins.security.ssl.transport.pemkey_filepath: node.key\n"
        "plugins.security.ssl.transport.pemtrustedcas_filepath: ca.crt\n"
        # the node certificate names no host: its DN is what is checked
        "plugins.security.ssl.transport.enforce_hostname_verification: false\n"
        f'plugins.security.nodes_dn: ["{NODE_DN}"]\n'
        f'plugins.security.authcz.admin_dn: ["{ADMIN_DN}"]\n'
        "plugins.security.allow_default_init_securityindex: true\n"
        "plugins.security.audit.type: noop\n"
    )


def node_certs(data: Path) -> tuple[tls.Certs, tls.Certs]:
    """The node's transport certificate and the admin's client certificate,
    signed by the stack's CA (each made once)."""
    folder = data / tls.TLS_DIR
    tls.stack_certs(data)
    node = tls.issue(folder, "opensearch-node", f"/{NODE_DN}", "serverAuth,clientAuth")
    admin = tls.issue(folder, "opensearch-admin", f"/{ADMIN_DN}", "clientAuth")
    return node, admin


def user(base: Path) -> dict[str, str]:
    """The readside user's name and password (made once, in ``base``)."""
    return tls.secret_file(base / CLIENT, USER)


def client(data: Path, port: int) -> dict[str, object]:
    """The opensearch sink settings of the readside user over HTTPS:
    ``hosts``, ``username``, ``password``, ``ca_cert`` (the stack's CA).

    Raises:
        FileNotFoundError: the stack's OpenSearch never started secured.
    """
    kept = json.loads((data / "opensearch" / CLIENT).read_text())
    return {
        "hosts": [f"https://127.0.0.1:{port}"],
        "username": kept["username"],
        "password": kept["password"],
        "ca_cert": str(data / tls.TLS_DIR / "ca.crt"),
    }


def bcrypt_hash(node: Path, java: str, password: str) -> str:
    """The password's bcrypt hash, by the plugin's ``Hasher`` tool."""
    classpath = f"{node / 'plugins' / PLUGIN}/*:{node / 'lib'}/*"
    done = subprocess.run(
        [
            java,
            "-Dorg.apache.logging.log4j.simplelog.StatusLogger.level=OFF",
            "-cp",
            classpath,
            "org.opensearch.security.tools.Hasher",
            "-env",
            "READSIDE_OPENSEARCH_PASSWORD",
        ],
        env={"READSIDE_OPENSEARCH_PASSWORD": password},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("$2"):
        raise FatalError(
            f"the security plugin's Hasher failed: {done.stderr.strip()[-300:]}"
        )
    return lines[-1]


_CONFIG = """\
_meta:
  type: "config"
  config_version: 2
config:
  dynamic:
    http:
      anonymous_auth_enabled: false
    authc:
      basic_internal_auth_domain:
        http_enabled: true
        transport_enabled: true
        order: 0
        http_authenticator:
          type: basic
          challenge: true
        authentication_backend:
          type: intern
"""

#: what the readside user may do: watch the cluster, read and write every
#: index (the plugin's own index stays its: a system index), scroll
_ROLES = f"""\
_meta:
  type: "roles"
  config_version: 2
{USER}:
  reserved: false
  cluster_permissions:
    - "cluster_monitor"
    - "cluster_composite_ops"
    - "indices:data/read/scroll*"
  index_permissions:
    - index_patterns: ["*"]
      allowed_actions: ["indices_all"]
"""

_MAPPING = '_meta:\n  type: "rolesmapping"\n  config_version: 2\n'


def _users(password_hash: str) -> str:
    return (
        '_meta:\n  type: "internalusers"\n  config_version: 2\n'
        f"{USER}:\n"
        f'  hash: "{password_hash}"\n'
        "  reserved: false\n"
        f'  opendistro_security_roles: ["{USER}"]\n'
        '  description: "readside: the opensearch sinks and the stack checks"\n'
    )


def _private(path: Path, text: str | None = None, source: Path | None = None) -> None:
    """Write ``path`` readable by its owner alone (the plugin warns of
    anything more open in its config folder)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    if source is not None:
        shutil.copyfile(source, path)
    elif text is not None:
        path.write_text(text)


def configure(conf: Path, base: Path, data: Path, node: Path, java: str) -> None:
    """The certificates and the plugin's files in the config folder ``conf``
    of the node whose data folder is ``base`` (idempotent; the password's
    hash is made once, with the user's file)."""
    certs = tls.stack_certs(data)
    transport, _admin = node_certs(data)
    copies = {
        "ca.crt": certs.ca,
        "http.crt": certs.cert,
        "http.key": certs.key,
        "node.crt": transport.cert,
        "node.key": transport.key,
    }
    for name, source in copies.items():
        _private(conf / name, source=source)
    folder = conf / "opensearch-security"
    folder.mkdir(mode=0o700, exist_ok=True)
    shipped = node / "plugins" / PLUGIN / "config"
    for name in _SHIPPED:
        _private(folder / f"{name}.yml", source=shipped / f"{name}.yml")
    _private(folder / "config.yml", _CONFIG)
    _private(folder / "roles.yml", _ROLES)
    _private(folder / "roles_mapping.yml", _MAPPING)
    users = folder / "internal_users.yml"
    secret = base / CLIENT
    if not users.exists() or not secret.exists():
        password = user(base)["password"]
        _private(users, _users(bcrypt_hash(node, java, password)))
    for path in conf.iterdir():
        if path.is_file():
            path.chmod(0o600)
    conf.chmod(0o700)
