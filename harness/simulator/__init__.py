"""The supplier simulator: many suppliers and the issuer over HTTP, faults from YAML profiles.

    profiles.py  fleet YAML → pydantic models (``load_fleet``; errors are ``ProfileError``)
    engine.py    supplier, order, refund, callback and issuer state; fates per order
    app.py       raw ASGI routing: /suppliers/<name>/v1/..., /issuer/v1/..., /_sim/...
    server.py    ``serve()``: uvicorn on a socket bound here (port 0 works)
    process.py   ``start_simulator()``: the simulator as a subprocess, for trials and tests
"""

from harness.simulator.process import SimulatorProcess, start_simulator
from harness.simulator.profiles import Fleet, SupplierProfile, load_fleet

__all__ = ["Fleet", "SimulatorProcess", "SupplierProfile", "load_fleet", "start_simulator"]
