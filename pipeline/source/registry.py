"""Writer schemas by id, from a schema registry's Confluent-compatible API.

Apicurio Registry 2.x answers ``GET /apis/ccompat/v7/schemas/ids/{id}``
for the content ids its converter writes in Confluent mode; Confluent's own
registry answers the same path without the ``/apis/ccompat/v7`` prefix.
An id names one schema for good, so callers cache what they fetch.

A registry that asks for a login gets HTTP basic credentials
(``kafka.schema_registry_username``/``_password``); one that refuses them
(401, 403) is a configuration error, not an outage.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadRecord, FatalError, TransientError

if TYPE_CHECKING:
    from pipeline.sourceconfig import KafkaConfig

logger = logging.getLogger(__name__)

CCOMPAT_PATH = "/apis/ccompat/v7"
#: How long one schema fetch retries a registry that does not answer.
RETRY_FOR_S = 10.0


class SchemaRegistry:
    """Fetches Avro writer schemas by id.

    Args:
        url: the registry's base URL (``kafka.schema_registry_url``).
        timeout_s: of one HTTP request.
        retry_for_s: a registry that does not answer is asked again, with
            backoff, this long before :class:`TransientError` is raised.
        login: ``(username, password)`` sent as HTTP basic credentials.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        retry_for_s: float = RETRY_FOR_S,
        sleep: Callable[[float], None] = time.sleep,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.base = url.rstrip("/") + CCOMPAT_PATH
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self._sleep = sleep
        self._headers = {}
        if login is not None:
            token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    @classmethod
    def of(cls, kafka: KafkaConfig) -> SchemaRegistry:
        """The registry of ``kafka.schema_registry_url``, logging in as its
        ``schema_registry_username``."""
        password = kafka.schema_registry_password
        login = None
        if kafka.schema_registry_username is not None and password is not None:
            login = (kafka.schema_registry_username, password.get_secret_value())
        return cls(kafka.schema_registry_url, login=login)

    def answers(self, timeout_s: float = 3.0) -> bool:
        """Whether the registry answers now (once, not retried): any HTTP
        answer but a server error, a refused login included."""
        req = urllib.request.Request(  # noqa: S310 (configured URL)
            f"{self.base}/schemas/types", headers=self._headers
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s):  # noqa: S310
                return True
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code < 500
        except (OSError, ValueError):
            return False

    def schema(self, schema_id: int) -> Any:
        """The parsed Avro schema of ``schema_id``.

        Raises:
            BadRecord: the registry does not know the id, or its answer is
                not a schema.
            TransientError: the registry did not answer for ``retry_for_s``.
        """
        url = f"{self.base}/schemas/ids/{schema_id}"
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.2
        req = urllib.request.Request(url, headers=self._headers)  # noqa: S310 (configured URL)
        while True:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                    body = json.loads(resp.read())
                break
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 404:
                    raise BadRecord(
                        "decode", f"schema id {schema_id} is not in the registry {url}"
                    ) from exc
                if exc.code in (401, 403):
                    who = "refused the login of" if self._headers else "asks for"
                    raise FatalError(
                        f"schema registry {url} {who} kafka.schema_registry_username"
                        f"/schema_registry_password (HTTP {exc.code})"
                    ) from exc
                error: Exception = exc
            except (OSError, ValueError) as exc:
                error = exc
            if time.monotonic() + delay > deadline:
                raise TransientError(
                    f"schema registry {url} did not answer: {error}"
                ) from error
            logger.warning(
                "schema registry unreachable url=%s retry_in_s=%.1f error=%s",
                url,
                delay,
                error,
            )
            self._sleep(delay)
            delay = min(delay * 2, 5.0)
        text = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise BadRecord(
                "decode", f"registry answer for id {schema_id} has no schema"
            )
        try:
            return json.loads(text)
        except ValueError as exc:
            raise BadRecord(
                "decode", f"schema id {schema_id} is not JSON (Avro expected): {exc}"
            ) from exc
