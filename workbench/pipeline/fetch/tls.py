"""TLS for the fetcher: whom it trusts, and what a failed handshake means.

Trust: one ``ssl.SSLContext`` per fetcher, built once from the operating system's trust store as
the standard library reads it (OpenSSL's default paths on Linux and the BSDs, ``/etc/ssl/certs``,
honouring ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``; the system ROOT store on Windows), with
``WORKBENCH_CA_BUNDLE`` (a PEM file of extra CAs: an institution's, a TLS-inspecting gateway's)
added on top. certifi's Mozilla bundle is loaded only when the OS store gave no CA at all
(python.org builds on macOS, containers without ca-certificates).

- Not certifi alone: it ignores the CAs an IT department installs into the OS store, which is how
  machines behind a TLS-inspecting gateway or on a private CA trust it.
- Not the ``truststore`` package: on Linux, where workers run, the trust it gives is exactly
  OpenSSL's default paths, and it reloads them for every new connection (``set_default_verify_
  paths`` inside each ``wrap_bio``): 98 ms of event-loop CPU per new TLS connection measured here
  (144 CAs, OpenSSL 3.0), against 0.01 ms with a context built once (building one costs ~70 ms).
  What it adds, the macOS keychain, ``WORKBENCH_CA_BUNDLE`` covers.

Verification is always on (certificate and host name checked, TLS 1.2 or newer); no setting
turns it off.

Failures: a certificate that fails verification is ``TLSCertificateError`` and a handshake the two
sides cannot agree on (an old protocol, no shared cipher, not TLS at all) ``TLSHandshakeError``,
both permanent: another try minutes later meets the same server. A handshake cut off by the
network (reset, EOF) stays a retryable ``FetchConnectionError``: there a retry can help.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

from workbench.core.errors import (
    FetchConnectionError,
    PipelineError,
    TLSCertificateError,
    TLSHandshakeError,
)

# X509_V_ERR_* codes (OpenSSL's x509_vfy.h) -> what went wrong, in words a user can act on.
_UNTRUSTED = (
    "it was issued by a certificate authority that is not trusted (a private or institution CA "
    "can be trusted with WORKBENCH_CA_BUNDLE)"
)
_VERIFY_REASONS = {
    9: "the certificate is not valid yet",
    10: "the certificate has expired",
    18: "the certificate is self-signed",
    19: "the chain ends in a self-signed certificate that is not trusted",
    20: _UNTRUSTED,
    21: _UNTRUSTED,
    2: _UNTRUSTED,
    23: "the certificate has been revoked",
    62: "the certificate was issued for another host name",
    64: "the certificate was issued for another IP address",
}
# ssl.SSLError.reason -> what the handshake failure means.
_OLD_PROTOCOL = "the server offers only TLS versions older than 1.2, which are not accepted"
_NO_CIPHER = "the server and Workbench share no cipher suite"
_NOT_TLS = "the server does not speak TLS on this port (plain HTTP on an https:// URL?)"
_HANDSHAKE_REASONS = {
    "TLSV1_ALERT_PROTOCOL_VERSION": _OLD_PROTOCOL,
    "UNSUPPORTED_PROTOCOL": _OLD_PROTOCOL,
    "NO_PROTOCOLS_AVAILABLE": _OLD_PROTOCOL,
    "WRONG_SSL_VERSION": _OLD_PROTOCOL,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": _NO_CIPHER,
    "NO_SHARED_CIPHER": _NO_CIPHER,
    "NO_CIPHERS_AVAILABLE": _NO_CIPHER,
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "HTTP_REQUEST": _NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
    "TLSV1_UNRECOGNIZED_NAME": "the server does not serve this host name (SNI)",
}
_HASHED_CERT = re.compile(r"^[0-9a-fA-F]{8}\.[0-9]+$")


def client_context(ca_bundle: str | Path | None = None) -> ssl.SSLContext:
    """The fetcher's TLS context: the OS trust store (certifi's if it has none) plus ``ca_bundle``.

    Costs ~70 ms (OpenSSL parses every CA): build it once per process, not per request.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not _has_trust_anchors(ctx):
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with our dependencies
            pass
        else:
            ctx.load_verify_locations(cafile=certifi.where())
    if ca_bundle is not None:
        ctx.load_verify_locations(cafile=os.fspath(ca_bundle))
    return ctx


def _has_trust_anchors(ctx: ssl.SSLContext) -> bool:
    if ctx.cert_store_stats()["x509_ca"]:
        return True
    # A CA directory (capath) is read lazily, so its certificates are not counted above.
    capath = ssl.get_default_verify_paths().capath
    return bool(capath and os.path.isdir(capath)) and any(
        _HASHED_CERT.match(name) for name in os.listdir(capath)
    )


def certificate_error(url: object, host: str, err: BaseException) -> PipelineError:
    """The typed error for a certificate that failed verification, saying why."""
    code = getattr(err, "verify_code", None)
    reason = _VERIFY_REASONS.get(code) if isinstance(code, int) else None
    if reason is None:
        reason = str(getattr(err, "verify_message", "") or "") or str(err)
    return TLSCertificateError(
        f"the TLS certificate of {host} failed verification: {reason} (fetching {url})"
    )


def handshake_error(url: object, host: str, err: BaseException) -> PipelineError:
    """The typed error for a failed TLS handshake: permanent unless the network cut it off."""
    if not isinstance(err, ssl.SSLError) or isinstance(
        err, ssl.SSLEOFError | ssl.SSLSyscallError | ssl.SSLZeroReturnError
    ):
        return FetchConnectionError(
            f"the TLS handshake with {host} was cut off ({err!r}) fetching {url}"
        )
    reason = _HANDSHAKE_REASONS.get(err.reason or "")
    if reason is None:
        reason = (err.reason or str(err)).replace("_", " ").lower()
    return TLSHandshakeError(f"TLS handshake with {host} failed: {reason} (fetching {url})")
