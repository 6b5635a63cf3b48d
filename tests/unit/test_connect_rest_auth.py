"""Basic authentication of Kafka Connect's REST API: the local stack's
worker asks for it (``pipeline.stack.jvm.Connect``), and every request
readside makes carries the ``connect`` section's login
(``ConnectClient.of``), tried against a real HTTP server on loopback that
asks for it as Connect's extension does."""

from __future__ import annotations

import base64
import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from repo_config import DATA, write_config

from connectors.debezium import ConnectClient
from pipeline.config import StackConfig, load
from pipeline.errors import ConfigError, FatalError
from pipeline.sourceconfig import ConnectConfig
from pipeline.stack import jvm
from pipeline.stack.provision import Installed
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit

LOGIN = ("readside", "pw-Rest_123")


class _Connect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        token = base64.b64encode(":".join(LOGIN).encode()).decode()
        if self.headers.get("Authorization") != f"Basic {token}":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error_code":401,"message":"unauthorized"}')
            return
        body = json.dumps(["shop-postgres"]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def connect_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Connect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_connect_sections_login_is_sent(connect_url: str) -> None:
    section = ConnectConfig(url=connect_url, username=LOGIN[0], password=LOGIN[1])
    client = ConnectClient.of(section)
    assert client.request("GET", "/connectors") == ["shop-postgres"]
    assert LOGIN[1] not in repr(client)


@pytest.mark.parametrize("login", [None, (LOGIN[0], "wrong")])
def test_a_refused_login_is_fatal_and_names_the_settings(
    connect_url: str, login: tuple[str, str] | None
) -> None:
    with pytest.raises(FatalError) as info:
        ConnectClient(connect_url, auth=login).request("GET", "/connectors")
    message = str(info.value)
    assert "401" in message
    assert "connect.username and connect.password" in message
    assert "wrong" not in message


def test_username_and_password_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        ConnectConfig(password="x")
    assert ConnectClient.of(ConnectConfig()).auth is None
    connect = {k: v for k, v in DATA["connect"].items() if k != "password"}
    with pytest.raises(ConfigError) as info:
        load(write_config(tmp_path, {**DATA, "connect": connect}), env={})
    assert "connect: username and password go together" in str(info.value)


def test_the_stacks_worker_asks_for_its_one_user(tmp_path: Path) -> None:
    nowhere = tmp_path / "none"
    ctx = Context(cfg=StackConfig(), data=tmp_path, installed=Installed(*[nowhere] * 7))
    svc = jvm.Connect(ctx)
    base = ctx.dir("connect")
    base.mkdir(parents=True)
    jaas = svc._rest_login(base)
    user = jvm.rest_user(tmp_path)
    assert user["username"] == jvm.REST_USER
    users = base / "rest-users.properties"
    assert users.read_text() == f"{user['username']}={user['password']}\n"
    text = jaas.read_text()
    assert text.startswith("KafkaConnect {")
    assert "PropertyFileLoginModule required" in text
    assert f'file="{users}"' in text
    for path in (users, jaas, base / jvm.REST_CLIENT):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert f"-Djava.security.auth.login.config={jaas}" in svc.command()
    svc._rest_login(base)
    assert jvm.rest_user(tmp_path) == user  # the password is kept
