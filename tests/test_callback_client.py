"""The simulator's callback client against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.drivers.base import Credentials
from harness.run.callbacks import CallbackReceiver, RawCallback
from harness.simulator.callback_client import CallbackClient


def test_posts_reuse_one_keep_alive_connection() -> None:
    """Twenty callbacks to a keep-alive receiver arrive intact over one connection."""
    seen: list[RawCallback] = []
    peers: set[int] = set()

    async def main() -> list[int]:
        def handler(raw: RawCallback) -> int:
            seen.append(raw)
            return 200 if len(seen) % 5 else 500

        receiver = CallbackReceiver(handler)
        original = receiver._serve

        async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.add(writer.get_extra_info("peername")[1])
            await original(reader, writer)

        receiver._serve = counting  # type: ignore[method-assign]
        async with receiver:
            client = CallbackClient()
            try:
                return [await client.post(f"{receiver.url}/cb/x?q=1", f"body-{i}".encode(),
                                          {"x-signature": "s"}, 2.0) for i in range(20)]
            finally:
                await client.aclose()

    statuses = asyncio.run(main())
    assert statuses == [200, 200, 200, 200, 500] * 4
    assert [r.body for r in seen] == [f"body-{i}".encode() for i in range(20)]
    assert seen[0].path == "/cb/x?q=1" and seen[0].headers["x-signature"] == "s"
    assert len(peers) == 1


class _Closing(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 handler: answers 204 and closes, as simple receivers do."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def closing_server() -> Iterator[str]:
    """A threaded http.server on 127.0.0.1:0 that closes every connection."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Closing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_receiver_that_closes_each_connection(closing_server: str) -> None:
    """A receiver that closes after each answer still gets every callback, each acked."""
    async def main() -> list[int]:
        client = CallbackClient()
        try:
            return [await client.post(f"{closing_server}/hook", b"{}", {}, 2.0)
                    for _ in range(5)]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [204] * 5


def test_unreachable_and_https_are_failed_deliveries() -> None:
    """No listener, or an https URL, is an OSError: a failed delivery to retry."""
    async def main() -> None:
        client = CallbackClient()
        with pytest.raises(OSError):
            await client.post("http://127.0.0.1:9/x", b"{}", {}, 1.0)
        with pytest.raises(OSError):
            await client.post("https://127.0.0.1:9/x", b"{}", {}, 1.0)

    asyncio.run(main())


def test_receiver_reads_chunked_bodies_and_caps_their_size() -> None:
    """A chunked callback body arrives whole; one over the body cap is refused with 413
    and the rejection is reported, not passed to the handler."""
    import httpx

    seen: list[bytes] = []
    rejected: list[str] = []

    def handler(raw: RawCallback) -> int:
        seen.append(raw.body)
        return 200

    async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def main() -> tuple[int, int]:
        receiver = CallbackReceiver(handler, max_body=1000,
                                    on_reject=lambda reason, path: rejected.append(reason))
        async with receiver, httpx.AsyncClient(trust_env=False) as client:
            ok = await client.post(f"{receiver.url}/callbacks/x",
                                   content=chunks([b'{"a":', b' 1', b"}"]))
            big = await client.post(f"{receiver.url}/callbacks/x",
                                    content=chunks([b"x" * 600, b"y" * 600]))
            return ok.status_code, big.status_code

    assert asyncio.run(main()) == (200, 413)
    assert seen == [b'{"a": 1}']
    assert rejected == ["too_large"]


def test_receiver_answers_a_dialects_acknowledgement_body() -> None:
    """A supplier whose dialect wants a body to acknowledge a callback (Juhe's
    ``success``) gets it with the 200; the reference protocol's empty 200 is unchanged,
    and a refused callback gets no acknowledgement."""
    import httpx

    from harness.drivers.reference import build_driver
    from harness.run.callbacks import acknowledged

    class Side:
        def __init__(self, driver: object) -> None:
            self.driver = driver

    juhe = Side(build_driver("concat_md5", "http://127.0.0.1:9/juhe", Credentials("k", "s")))
    reference = Side(build_driver("reference", "http://127.0.0.1:9/r", Credentials("k", "s")))
    assert acknowledged(juhe, 200) == (200, b"success")
    assert acknowledged(juhe, 401) == 401 and acknowledged(reference, 200) == 200

    async def main() -> tuple[int, bytes]:
        receiver = CallbackReceiver(lambda raw: acknowledged(juhe, 200))
        async with receiver, httpx.AsyncClient(trust_env=False) as client:
            answer = await client.post(f"{receiver.url}/callbacks/x", content=b"a=1")
            return answer.status_code, answer.content

    assert asyncio.run(main()) == (200, b"success")


HEAD = b"POST /callbacks/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
REJECTIONS = {
    "malformed request line": ([(b"GARBAGE\r\n\r\n", 0)], [("malformed", "")], b" 400 "),
    "declared length over the cap": (
        [(b"POST /callbacks/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n", 0)],
        [("too_large", "/callbacks/x")], b" 413 "),
    "bad method": ([(b"GET /callbacks/x HTTP/1.1\r\nHost: a\r\n\r\n", 0)],
                   [("method", "/callbacks/x")], b" 405 "),
    "never a byte": ([], [("idle", "")], b""),
    "silent mid-request": ([(HEAD + b"abc", 0)], [("idle", "/callbacks/x")], b""),
    "trickled body": ([(HEAD, 0.2)] + [(b"a", 0.2)] * 4,
                      [("slow_request", "/callbacks/x")], b""),
    "cut off mid-body": ([(HEAD + b"abc", -1)], [("malformed", "/callbacks/x")], b""),
    "handler raised": ([(HEAD + b"0123456789", 0)], [("handler_error", "/callbacks/x")],
                       b" 400 "),
    "served, then idle keep-alive": ([(HEAD.replace(b"/x", b"/ok") + b"0123456789", 0)], [],
                                     b" 200 "),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_receiver_reports_every_rejection(case: str) -> None:
    """Every request the receiver refuses is reported to on_reject with its reason, and
    a keep-alive connection closed quietly after it was served is not."""
    script, expected, answer = REJECTIONS[case]
    rejected: list[tuple[str, str]] = []

    def handler(raw: RawCallback) -> int:
        if raw.path != "/callbacks/ok":
            raise RuntimeError("handler bug")
        return 200

    async def main() -> bytes:
        receiver = CallbackReceiver(handler, max_body=100, idle_s=0.3, request_s=0.6,
                                    on_reject=lambda reason, path: rejected.append(
                                        (reason, path)))
        async with receiver:
            port = int(receiver.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for chunk, pause in script:
                try:
                    writer.write(chunk)
                    await writer.drain()
                except ConnectionError:
                    break  # the receiver already gave up on this trickle
                if pause < 0:
                    writer.write_eof()
                else:
                    await asyncio.sleep(pause)
            try:
                received = await asyncio.wait_for(reader.read(), 3)  # until it closes
            except ConnectionError:
                received = b""  # it closed while a trickled byte was on its way
            writer.close()
            return received

    received = asyncio.run(main())
    assert rejected == expected
    assert answer in received if answer else True
