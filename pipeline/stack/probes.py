"""Checks the probes of HTTP services share."""

from __future__ import annotations

import urllib.error

from pipeline.stack.services import http_json


def refuses_anonymous(url: str, api: str, service: str) -> str | None:
    """``None`` when ``url`` answers a request without credentials with 401;
    else what is wrong. A service that answers it runs with settings older
    than this readside's, which a restart brings in (``restart <service>``,
    which ``stack up`` acts on)."""
    try:
        http_json(url)
        return f"{api} answers a request without a login: restart {service}"
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code != 401:
                return f"{api} answered HTTP {exc.code} without a login"
    except (OSError, ValueError) as exc:
        return f"{api} probe failed: {exc.__class__.__name__}"
    return None
