"""Whether a MongoDB server's TLS certificate is one the sink's URI trusts.

pymongo reports a handshake whose certificate check failed as it reports a
server that does not answer: a ``ServerSelectionTimeoutError`` once the
sink's timeout ends, the SSL error kept only as text. Retried, it would
fail for good. After such a timeout at the sink's start, :func:`untrusted`
makes the handshake again with the URI's TLS options and the standard
library, whose :class:`ssl.SSLCertVerificationError` tells a certificate
that no retry will make trusted from a server that is down.
"""

from __future__ import annotations

import socket
import ssl

import pymongo.errors as perr
from pymongo import uri_parser


def untrusted(uri: str, timeout_s: float) -> str | None:
    """The first server of ``uri`` whose certificate fails the check of the
    URI's TLS options (``tlsCAFile``, else the system's CAs; the host name
    unless ``tlsAllowInvalidHostnames``): ``"host:port: reason"``.

    ``None`` when TLS is off or its check waived
    (``tlsAllowInvalidCertificates``, ``tlsInsecure``), for a
    ``mongodb+srv://`` URI (its hosts are DNS records, not looked up here),
    or when every handshake passed or failed otherwise (a server down).
    """
    if uri.startswith("mongodb+srv://"):
        return None
    try:
        parsed = uri_parser.parse_uri(uri)
    except (perr.PyMongoError, ValueError, OSError):
        return None
    opts = parsed["options"]
    if not opts.get("tls") or opts.get("tlsAllowInvalidCertificates"):
        return None
    context = ssl.create_default_context(cafile=opts.get("tlsCAFile"))
    context.check_hostname = not opts.get("tlsAllowInvalidHostnames", False)
    if opts.get("tlsCertificateKeyFile"):
        context.load_cert_chain(
            opts["tlsCertificateKeyFile"],
            password=opts.get("tlsCertificateKeyFilePassword"),
        )
    for host, port in parsed["nodelist"]:
        try:
            with (
                socket.create_connection((host, port), timeout=timeout_s) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                pass
        except ssl.SSLCertVerificationError as exc:
            return f"{host}:{port}: {exc.verify_message}"
        except OSError:  # refused, reset, timed out, another SSL error
            continue
    return None
