"""The trial transport's own rules on real sockets on 127.0.0.1: which keep-alive
connections it reuses, what it calls not sent, how it reads a body, https, and its
connection bound. A scripted server thread answers each connection as a test says."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.drivers.base import Failure, HttpRequest, HttpResponse
from harness.run.async_transport import AsyncTransport


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n" + b"".join(
        line + b"\r\n" for line in extra)
    return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def read_request(conn: socket.socket) -> bytes | None:
    """One whole request (headers and a Content-Length body); None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head


Handler = Callable[[socket.socket, int], None]
"""Serves one accepted connection; the int is the connection's number (0, 1, ...)."""


class Scripted:
    """Accepts connections on 127.0.0.1 and serves each in a thread with ``handler``."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.handler, self.tls = handler, tls
        self.connections = 0
        self.open_now = self.most_open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                number = self.connections
                self.connections += 1
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn, number)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open_now -= 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Scripted:
        servers.append(Scripted(handler, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def post(url: str) -> HttpRequest:
    return HttpRequest("POST", f"{url}/v1/orders", {"Content-Type": "application/json"},
                       b'{"client_order_id": "c1"}', read_only=False)


def send_all(transport: AsyncTransport, requests: list[HttpRequest], *,
             gap_s: float = 0.0) -> list[HttpResponse]:
    """Send ``requests`` one after another (``gap_s`` apart) and close the transport."""
    async def main() -> list[HttpResponse]:
        out = []
        for request in requests:
            out.append(await transport.send(request))
            await asyncio.sleep(gap_s)
        await transport.aclose()
        return out
    return asyncio.run(main())


def test_keep_alive_connection_is_reused(serve: Callable[..., Scripted]) -> None:
    """Three requests to a keep-alive server go over one connection and all get answers."""
    def handler(conn: socket.socket, number: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(answer(b'{"n": %d}' % number))

    server = serve(handler)
    replies = send_all(AsyncTransport(5.0), [post(server.url)] * 3)
    assert [(r.status, r.body, r.transport_error) for r in replies] == [
        (201, b'{"n": 0}', None)] * 3
    assert server.connections == 1


def test_connection_closed_while_idle_is_not_reused(serve: Callable[..., Scripted]) -> None:
    """A server that closes an idle keep-alive connection (its idle timeout, here 20 ms)
    gets the next POST on a new connection, never on the closed one, where the POST's
    outcome would be unknown. (A close that crosses the next request on the wire cannot
    be seen in time by any client: that POST's outcome is unknown and the lifecycle asks.)"""
    def handler(conn: socket.socket, number: int) -> None:
        if read_request(conn) is not None:
            conn.sendall(answer(b'{"n": %d}' % number))
            time.sleep(0.02)
            conn.shutdown(socket.SHUT_WR)
            read_request(conn)

    server = serve(handler)
    replies = send_all(AsyncTransport(5.0), [post(server.url)] * 3, gap_s=0.1)
    assert [(r.status, r.body, r.transport_error) for r in replies] == [
        (201, b'{"n": 0}', None), (201, b'{"n": 1}', None), (201, b'{"n": 2}', None)]


def test_bytes_sent_unasked_while_idle_discard_the_connection(
        serve: Callable[..., Scripted]) -> None:
    """A stray answer a server sends while the connection is idle is never read as the
    next request's answer: that connection is dropped and the next one answers."""
    def handler(conn: socket.socket, number: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(answer(b'{"n": %d}' % number))
            if number == 0:
                conn.sendall(answer(b'{"stray": true}'))

    server = serve(handler)
    replies = send_all(AsyncTransport(5.0), [post(server.url)] * 2, gap_s=0.05)
    assert [r.body for r in replies] == [b'{"n": 0}', b'{"n": 1}']


def test_body_until_close_and_connection_close(serve: Callable[..., Scripted]) -> None:
    """An answer with no length, ended by the server closing, is read whole; a
    ``Connection: close`` answer's connection is not used again."""
    def handler(conn: socket.socket, number: int) -> None:
        if read_request(conn) is None:
            return
        if number == 0:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 70000)
        else:
            conn.sendall(answer(b"{}", b"Connection: close"))
            time.sleep(0.2)

    server = serve(handler)
    replies = send_all(AsyncTransport(5.0), [post(server.url)] * 3)
    assert (replies[0].status, len(replies[0].body), replies[0].transport_error) == (
        200, 70000, None)
    assert [(r.status, r.transport_error) for r in replies[1:]] == [(201, None)] * 2
    assert server.connections == 3


def test_only_a_failed_connect_is_not_sent(serve: Callable[..., Scripted]) -> None:
    """A refused connection is ``not_sent:ConnectError`` (nothing bought); a server that
    takes the POST and closes without answering leaves its outcome unknown, and one that
    answers headers then cuts the body keeps its status."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()

    def hang_up(conn: socket.socket, number: int) -> None:
        read_request(conn)

    def cut(conn: socket.socket, number: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"part")

    silent, cutting = serve(hang_up), serve(cut)
    refused, no_answer, cut_body = send_all(AsyncTransport(5.0), [
        post(f"http://127.0.0.1:{port}"), post(silent.url), post(cutting.url)])
    assert (refused.status, refused.transport_error) == (0, "not_sent:ConnectError")
    assert not Failure(refused.transport_error, 0).outcome_unknown
    assert (no_answer.status, no_answer.transport_error) == (0, "connect_error:RemoteProtocolError")
    assert Failure(no_answer.transport_error, 0).outcome_unknown
    assert (cut_body.status, cut_body.body) == (201, b"")
    assert cut_body.transport_error == "body_error:RemoteProtocolError"


def test_deadline_covers_the_whole_request(serve: Callable[..., Scripted]) -> None:
    """A body trickled slowly ends at the deadline as ``timeout``, its status kept."""
    def trickle(conn: socket.socket, number: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.05)

    server = serve(trickle)
    start = time.perf_counter()
    (reply,) = send_all(AsyncTransport(0.5), [post(server.url)])
    assert (reply.status, reply.transport_error, reply.body) == (201, "timeout", b"")
    assert time.perf_counter() - start < 2.0


def test_no_more_connections_than_the_bound(serve: Callable[..., Scripted]) -> None:
    """Six requests at once with a bound of 2 are all answered over at most 2 connections."""
    def slow(conn: socket.socket, number: int) -> None:
        while read_request(conn) is not None:
            time.sleep(0.1)
            conn.sendall(answer(b"{}"))

    server = serve(slow)
    transport = AsyncTransport(5.0, max_connections=2)

    async def main() -> list[HttpResponse]:
        replies = await asyncio.gather(*(transport.send(post(server.url)) for _ in range(6)))
        await transport.aclose()
        return list(replies)

    replies = asyncio.run(main())
    assert [r.status for r in replies] == [201] * 6
    assert server.most_open <= 2 and server.connections == 2


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context that trusts exactly it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_https_verified_and_an_untrusted_certificate_is_not_sent(
        serve: Callable[..., Scripted], tmp_path: Path) -> None:
    """An https supplier with a trusted certificate is asked over TLS on one keep-alive
    connection; with a certificate the default CA bundle does not trust, the handshake
    fails before any byte of the order leaves: ``not_sent:ConnectError``."""
    server_tls, client_tls = self_signed(tmp_path)

    def handler(conn: socket.socket, number: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(answer(b'{"tls": true}'))

    server = serve(handler, server_tls)
    trusted = send_all(AsyncTransport(5.0, tls=client_tls), [post(server.url)] * 2)
    assert [(r.status, r.body) for r in trusted] == [(201, b'{"tls": true}')] * 2
    assert server.connections == 1
    (untrusted,) = send_all(AsyncTransport(5.0), [post(server.url)])
    assert (untrusted.status, untrusted.transport_error) == (0, "not_sent:ConnectError")
