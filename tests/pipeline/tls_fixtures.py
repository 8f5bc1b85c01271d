"""Fixtures for HTTPS and proxy tests: certificates made in the test (trustme, cryptography),
HTTPS servers on loopback, a TLS-1.1-only server, and a real forward proxy (proxy.py).

Imported by the test modules that need them (not a conftest, so other tests stay untouched).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .fetch_fixtures import Handler

ServeTLS = Callable[..., Awaitable[TestServer]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private certificate authority, like an institution's."""
    return trustme.CA(organization_name="Workbench test CA")


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> Path:
    """The CA's certificate as a PEM file: what WORKBENCH_CA_BUNDLE points to."""
    path = tmp_path / "institution-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    return ctx


def self_signed_context(host: str = "127.0.0.1") -> ssl.SSLContext:
    """A server context with a self-signed certificate for ``host``, as ``openssl req -x509``
    makes one: valid dates, the right name, signed by nobody but itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _temp_pem(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    ) as path:
        ctx.load_cert_chain(path)
    return ctx


@contextlib.contextmanager
def _temp_pem(data: bytes) -> Iterator[str]:
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(data)
        f.flush()
        yield f.name


@pytest.fixture
async def serve_tls() -> AsyncIterator[ServeTLS]:
    """``await serve_tls(routes, ctx, host="127.0.0.1")``: an HTTPS server on a free port."""
    servers: list[TestServer] = []

    async def start(
        routes: dict[str, Handler], ctx: ssl.SSLContext, host: str = "127.0.0.1"
    ) -> TestServer:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("GET", path, handler)
        server = TestServer(app, host=host, port=0)
        await server.start_server(ssl=ctx)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def https_url(server: TestServer, path: str = "/") -> str:
    return f"https://{server.host}:{server.port}{path}"


def http_url(server: TestServer, path: str = "/") -> str:
    return f"http://{server.host}:{server.port}{path}"


@pytest.fixture
def old_tls_server(ca: trustme.CA) -> Iterator[str]:
    """An https:// URL served only over TLS 1.0/1.1 (a blocking server in a thread: it sends the
    protocol-version alert a real old server sends)."""
    ctx = server_context(ca.issue_cert("127.0.0.1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: the point
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    thread.join(5)
    listener.close()


class ForwardProxy:
    """proxy.py, a real forward proxy, run as a subprocess on loopback; ``log()`` reads its access
    log: ``GET host:port/path`` or ``CONNECT host:port``, one line per client connection (for the
    first request on it; later ones on a kept-alive connection are relayed unlogged)."""

    def __init__(self, tmp: Path, host: str = "127.0.0.1", basic_auth: str | None = None):
        self.host = host
        self._log = tmp / f"proxy-{host}.log"
        port_file = tmp / f"proxy-{host}.port"
        cmd = [
            sys.executable, "-m", "proxy", "--hostname", host, "--port", "0",
            "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
            "--threaded", "--log-level", "INFO", "--log-file", str(self._log),
        ]
        if basic_auth:
            cmd += ["--basic-auth", basic_auth]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"proxy.py did not start: {self.log()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self._log.read_text() if self._log.exists() else ""

    async def wait_for_log(self, *fragments: str, timeout_s: float = 30.0) -> str:
        """The access log once it mentions every one of ``fragments`` (or after ``timeout_s``).
        proxy.py writes a connection's line when that connection closes, each in its own
        thread, in no set order: close the fetcher first, and wait for every line checked."""
        deadline = time.monotonic() + timeout_s
        while (not all(f in (text := self.log()) for f in fragments)
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        return text

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[Callable[..., ForwardProxy]]:
    """``forward_proxy(host="127.0.0.1", basic_auth=None)`` starts proxy.py; stopped at teardown."""
    started: list[ForwardProxy] = []

    def start(host: str = "127.0.0.1", basic_auth: str | None = None) -> ForwardProxy:
        proxy = ForwardProxy(tmp_path, host, basic_auth)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
