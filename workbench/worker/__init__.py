"""The worker: takes item jobs from the queue, runs their pipeline, records outcomes in the ledger.

- ``runtime``: what a worker does with one job (claim, run, record, retry), heart-beats, reconcile.
- ``process``: one worker process, ``WorkerRuntime`` wired into the queue's ARQ worker.
- ``supervisor``: several worker processes under one command.
- ``__main__``: ``python -m workbench.worker``.

``Workbench.start_worker`` runs the same worker inside a notebook's event loop.
"""
