"""The queue: Redis as the transport between client and workers (the SQL ledger is the truth).

- ``arq_adapter``: the one module that touches ARQ (connections, payload format, the worker loop,
  cron); ``arq`` is imported nowhere else.
- ``jobs``: connect, bulk enqueue, drop, check and sweep item jobs
  (``"<item>:<attempt>:<queue tag>"``).
- ``reconcile``: put back what Redis lost and what dead workers held, from the ledger.
- ``embedded``: the zero-setup Redis server on a unix socket under the data dir.
"""

from workbench.queue.arq_adapter import QueueRedis

__all__ = ["QueueRedis"]
