"""Run the simulator over HTTP: uvicorn (uvloop + httptools) on a socket we bind ourselves."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from harness.simulator.app import SimulatorApp
from harness.simulator.engine import Simulation
from harness.simulator.profiles import load_fleet


class _QuietServer(uvicorn.Server):
    """A uvicorn server that stops on SIGINT/SIGTERM and exits cleanly (no re-raise)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Ask the server to exit on SIGINT/SIGTERM; restore the handlers afterwards."""
        def stop(sig: int, frame: FrameType | None) -> None:
            self.should_exit = True

        originals = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(path: Path, *, host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> None:
    """Serve the fleet in ``path`` until SIGINT/SIGTERM; print one line with the URL."""
    fleet = load_fleet(path)
    sim = Simulation(fleet, seed=seed)
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(SimulatorApp(sim), loop="uvloop", http="httptools", ws="none",
                            log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=30,
                            timeout_graceful_shutdown=2)  # held ("silent") replies end
    server = _QuietServer(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"trialbench sim listening on http://{url_host}:{bound_port} "
                  f"({len(fleet.suppliers)} suppliers at /suppliers/<name>, issuer at /issuer)",
                  flush=True)
        await task

    try:
        if sys.platform != "win32":
            import uvloop

            uvloop.run(run())
        else:  # pragma: no cover - not a target platform
            asyncio.run(run())
    finally:
        sock.close()
