"""Running a test: the one order lifecycle and its two executors.

- :mod:`~harness.run.lifecycle`: the sans-I/O life of an order, a refund, a balance
  read, a catalog read and a code check: what to send next, and what an answer means.
- :mod:`~harness.run.budget`: the spending cap and the per-supplier retry budget.
- :mod:`~harness.run.trial`: trials, driven by asyncio and h11
  (:mod:`~harness.run.async_transport`), with the callback receiver
  (:mod:`~harness.run.callbacks`).
- :mod:`~harness.run.schedule`, :mod:`~harness.run.worker`, :mod:`~harness.run.burst`:
  bursts on Locust (gevent, :mod:`~harness.run.gevent_transport`): the open-model
  schedule, the worker that places it, and the master. Only these import Locust.
"""
