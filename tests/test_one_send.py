"""The trial transport sends a request's head and body in one write, as http.client does,
and keeps answering normally around it (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from harness.drivers.base import HttpRequest
from harness.run.async_transport import AsyncTransport, OneSendStream

ANSWER = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class FirstRead:
    """A keep-alive server that answers every request and records, per request, what its
    first recv() held, after giving a second segment time to arrive apart."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.first_reads: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.sock, self.sock.accept()[0] as conn:
            conn.settimeout(5)
            while True:
                first = conn.recv(65536)
                if not first:
                    return
                self.first_reads.append(first)
                data = first
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(ANSWER)


@pytest.fixture
def server() -> Iterator[FirstRead]:
    yield FirstRead()


def test_head_and_body_arrive_in_one_segment(server: FirstRead) -> None:
    """Each POST's head and body reach the supplier in its first read (httpcore alone
    wrote them in two sends), and each answer is read whole on the kept-alive connection."""
    body = b'{"client_order_id": "one-send", "sku": "card-10", "quantity": 1}'

    async def run() -> list[int]:
        transport = AsyncTransport(5.0)
        statuses = []
        for _ in range(5):
            answer = await transport.send(HttpRequest(
                "POST", f"{server.url}/v1/orders", {"Content-Type": "application/json"},
                body, read_only=False))
            statuses.append(answer.status)
            assert answer.body == b"{}" and answer.transport_error is None, answer
        await transport.aclose()
        return statuses

    assert asyncio.run(run()) == [201] * 5
    assert len(server.first_reads) == 5
    for first in server.first_reads:
        assert first.startswith(b"POST /v1/orders HTTP/1.1\r\n") and first.endswith(body)


def test_a_body_past_the_hold_limit_still_goes_whole(server: FirstRead) -> None:
    """A body larger than what the connection holds back is written as it comes and the
    supplier gets all of it and answers."""
    body = b"x" * (3 * OneSendStream.HOLD_BYTES + 17)

    async def run() -> int:
        transport = AsyncTransport(5.0)
        answer = await transport.send(HttpRequest("POST", f"{server.url}/v1/orders", {},
                                                  body, read_only=False))
        await transport.aclose()
        return answer.status

    assert asyncio.run(run()) == 201
    assert len(server.first_reads) == 1
