"""What ``workbench.queue.arq_adapter`` relies on in ARQ is still there, under the same names.

The adapter overrides ``Worker`` methods, drives its semaphore and counters, writes ARQ's job
payloads by hand and passes keyword arguments to ARQ's functions. An ARQ upgrade that renames or
removes any of those must fail here, naming the attribute, not in a running worker. The names
are read from the adapter's own source (its imports, calls and ``self.`` reads), so a new use of
ARQ is checked without anyone remembering to list it; the overrides are listed by hand too,
because an override whose ARQ method was renamed silently becomes a method nobody calls.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import inspect
from typing import Any

import arq
import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import deserialize_job_raw, serialize_job
from arq.worker import Worker, func

from workbench.core.codec import job_dumps, job_loads
from workbench.queue import arq_adapter
from workbench.queue.arq_adapter import QueueWorker

#: ARQ ``Worker`` methods the adapter overrides -> the parameters ARQ calls them with.
OVERRIDES = {
    "start_jobs": ["self", "job_ids"],
    "_poll_iteration": ["self"],
    "_release_sem_dec_counter_on_complete": ["self"],
    "run_job": ["self", "job_id", "score"],  # a job Redis would not record is handed back
    "handle_sig": ["self", "signum"],  # every stop marks the worker stopping
    "close": ["self"],  # job tasks cancelled by the stop (even before they ran) end quietly
    # the jobs finishing together finished in one script call
    "finish_job": ["self", "job_id", "finish", "result_data", "result_timeout_s",
                   "keep_result_forever", "incr_score", "keep_in_progress"],
}
#: ARQ ``Worker`` properties the adapter overrides (``pool``: a starting job's start pipeline is
#: answered from the start script's read, ``queue/starts.py``).
PROPERTIES = {"pool"}
#: ``QueueWorker``'s own methods (everything else it defines must be an override above).
OWN_METHODS = {"__init__", "_read_and_refill", "_poll_once", "_start", "_hand_back",
               "_writes_work", "_riding", "_start_token", "own_marks", "imply_payloads"}

TREE = ast.parse(inspect.getsource(arq_adapter))
CLASS = next(n for n in TREE.body if isinstance(n, ast.ClassDef) and n.name == "QueueWorker")


def _arq_imports() -> dict[str, tuple[str, str]]:
    """local name -> (arq module, attribute) for every ``from arq... import ...``."""
    out = {}
    for node in TREE.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "arq":
            for alias in node.names:
                out[alias.asname or alias.name] = (node.module or "", alias.name)
    return out


def _arq_object(local: str) -> Any:
    module, attr = _arq_imports()[local]
    return getattr(importlib.import_module(module), attr)


def _own_attributes() -> set[str]:
    init = next(n for n in CLASS.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return {
        t.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }


def _methods() -> set[str]:
    return {n.name for n in CLASS.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_arq_name_the_adapter_imports_exists() -> None:
    missing = [
        f"{module}.{attr}"
        for module, attr in _arq_imports().values()
        if not hasattr(importlib.import_module(module), attr)
    ]
    assert not missing, f"ARQ no longer has: {missing} (arq {arq.VERSION})"


def test_overridden_worker_methods_exist_with_the_same_parameters() -> None:
    extra = _methods() - OWN_METHODS - set(OVERRIDES) - PROPERTIES
    assert not extra, f"QueueWorker defines {sorted(extra)}: list each in OVERRIDES or OWN_METHODS"
    for name in PROPERTIES:
        assert isinstance(getattr(Worker, name, None), property), (
            f"arq.worker.Worker.{name} is no longer a property (arq {arq.VERSION})")
        assert isinstance(getattr(QueueWorker, name), property), f"QueueWorker.{name}"
    for name, params in OVERRIDES.items():
        assert name in _methods(), f"QueueWorker no longer overrides {name}: update OVERRIDES"
        arq_method = getattr(Worker, name, None)
        assert arq_method is not None, f"arq.worker.Worker.{name} is gone (arq {arq.VERSION})"
        arq_params = list(inspect.signature(arq_method).parameters)
        assert arq_params == params, f"arq.worker.Worker.{name}{arq_params}: expected {params}"
        ours = list(inspect.signature(getattr(QueueWorker, name)).parameters)
        assert ours == params, f"QueueWorker.{name}{ours} does not match ARQ's {params}"


def test_methods_called_through_super_exist() -> None:
    called = {
        node.func.attr
        for node in ast.walk(CLASS)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "super"
    }
    assert "run_job" in called  # the reader below is not vacuous
    missing = [name for name in sorted(called) if not hasattr(Worker, name)]
    assert not missing, f"arq.worker.Worker has no {missing} (arq {arq.VERSION})"


def test_run_job_is_called_as_the_adapter_calls_it() -> None:
    assert list(inspect.signature(Worker.run_job).parameters) == ["self", "job_id", "score"], (
        f"arq.worker.Worker.run_job{inspect.signature(Worker.run_job)}: the adapter calls "
        "run_job(job_id, score)"
    )


async def test_worker_attributes_the_adapter_reads_and_drives() -> None:
    """Every ``self.<name>`` QueueWorker uses that it does not define itself is ARQ's."""
    used = {
        node.attr
        for node in ast.walk(CLASS)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    } - _own_attributes() - (_methods() - PROPERTIES)
    assert {"sem", "job_counter", "tasks", "max_jobs", "pool"} <= used  # the reader works

    async def noop(ctx: dict[str, Any]) -> None:
        return None

    redis = ArqRedis()  # never connected: the constructor only stores it
    try:
        worker = Worker(functions=[func(noop, name="noop")], redis_pool=redis,
                        handle_signals=False, max_jobs=3)
        missing = [name for name in sorted(used) if not hasattr(worker, name)]
        assert not missing, f"arq.worker.Worker instances have no {missing} (arq {arq.VERSION})"
        assert isinstance(worker.job_counter, int) and worker.job_counter == 0
        assert isinstance(worker.tasks, dict)
        assert isinstance(worker.in_progress_timeout_s, float | int)
        # start_jobs acquires the semaphore once per job started while job_counter < max_jobs,
        # trusting that it never waits then
        for _ in range(worker.max_jobs):
            await asyncio.wait_for(worker.sem.acquire(), 0.5)
    finally:
        await redis.aclose()


def test_keyword_arguments_the_adapter_passes_to_arq() -> None:
    targets = {"QueueWorker": Worker.__init__} | {
        local: _arq_object(local) for local in _arq_imports() if callable(_arq_object(local))
    }
    checked, wrong = set(), []
    for node in ast.walk(TREE):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        target = targets.get(node.func.id)
        if target is None or not node.keywords:
            continue
        params = inspect.signature(target).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in params and not takes_any:
                wrong.append(f"{node.func.id}(..., {kw.arg}=...)")
        checked.add(node.func.id)
    assert {"QueueWorker", "func", "cron", "create_pool", "Job"} <= checked, checked
    assert not wrong, f"ARQ no longer takes: {wrong} (arq {arq.VERSION})"


def test_redis_settings_fields_the_adapter_sets() -> None:
    fields = {f.name for f in dataclasses.fields(RedisSettings)}
    rs = arq_adapter.redis_settings("redis://127.0.0.1:6379/0")
    for name in ("conn_timeout", "conn_retries", "retry", "retry_on_error"):
        assert name in fields, f"arq.connections.RedisSettings has no field {name!r}"
    assert rs.conn_timeout == 5 and rs.retry_on_error


@pytest.mark.parametrize(("item", "attempt", "et"), [(1, 1, 0), (123456789, 42, 1_760_000_000_000)])
def test_hand_written_payload_is_arqs(item: int, attempt: int, et: int) -> None:
    payload = arq_adapter.payload_template("run_item") % (item, attempt, et)
    assert payload == serialize_job("run_item", (item, attempt), {}, None, et,
                                    serializer=job_dumps), "ARQ's job payload format changed"
    function, args, kwargs, job_try, enqueue_ms = deserialize_job_raw(
        payload, deserializer=job_loads
    )
    assert (function, list(args), kwargs, job_try, enqueue_ms) == (
        "run_item", [item, attempt], {}, None, et
    ), "ARQ reads our payload differently"


#: finish_job's (finish, incr_score) cases that QueueWorker finishes in its own script
FINISHES = [(True, None), (False, None), (False, 0), (False, 5000)]


async def _keys(redis: ArqRedis, queue: str, job_ids: list[str]) -> dict[str, Any]:
    """Everything ARQ keeps about ``job_ids``, with the job ids replaced by their index."""
    from arq.constants import (
        abort_jobs_ss,
        in_progress_key_prefix,
        job_key_prefix,
        result_key_prefix,
        retry_key_prefix,
    )
    out: dict[str, Any] = {}
    for i, jid in enumerate(job_ids):
        for prefix in (in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix):
            out[f"{prefix}{i}"] = await redis.get(prefix + jid)
        out[f"queue:{i}"] = await redis.zscore(queue, jid)
        out[f"abort:{i}"] = await redis.zscore(abort_jobs_ss, jid)
    return out


async def test_batched_finish_writes_what_arqs_finish_job_writes(embedded_redis: str) -> None:
    """QueueWorker.finish_job, for jobs finishing together, leaves Redis exactly as ARQ's own
    finish_job does, one job at a time (keep_result 0: no result; a finished job's keys and
    queue entry gone; a job run again keeps its payload and tries, its score moved)."""
    from arq.connections import create_pool
    from arq.constants import (
        abort_jobs_ss,
        in_progress_key_prefix,
        job_key_prefix,
        retry_key_prefix,
    )

    async def noop(ctx: dict[str, Any]) -> None:
        return None

    redis = await create_pool(RedisSettings.from_dsn(embedded_redis))
    try:
        states = []
        for cls in (Worker, QueueWorker):
            queue = f"wbtest:finish:{cls.__name__}"
            ids = [f"{cls.__name__}-{i}" for i in range(len(FINISHES))]
            for jid in ids:
                await redis.zadd(queue, {jid: 1000})
                await redis.zadd(abort_jobs_ss, {jid: 1})
                await redis.set(job_key_prefix + jid, b"payload")
                await redis.set(retry_key_prefix + jid, b"2")
                await redis.psetex(in_progress_key_prefix + jid, 60_000, b"1")
            worker = cls(functions=[func(noop, name="noop")], redis_pool=redis, queue_name=queue,
                         handle_signals=False, keep_result=0)
            await asyncio.gather(*(
                worker.finish_job(jid, finish, None, 0, False, incr, None)
                for jid, (finish, incr) in zip(ids, FINISHES, strict=True)
            ))
            if isinstance(worker, QueueWorker):  # ours ride with the next start call
                await worker._riding().flush()
            states.append(await _keys(redis, queue, ids))
        arq_state, ours = states
        assert ours == arq_state
        assert arq_state["queue:0"] is None and arq_state["queue:3"] == 6000  # the cases differ
    finally:
        await redis.aclose()


async def test_run_job_starts_on_what_the_start_script_read(embedded_redis: str) -> None:
    """ARQ's run_job opens each job with a MULTI/EXEC (GET the payload, INCR and EXPIRE the try
    counter). QueueWorker's start script reads the same in the call that marks the jobs, and
    run_job runs on those replies: the same arguments and tries reach the job as under ARQ's
    own start (a first try, a third, a payload gone), the same keys are left, and no MULTI is
    sent to start them."""
    from arq.connections import create_pool
    from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

    seen: dict[str, list[Any]] = {}

    async def record(ctx: dict[str, Any], item: int, attempt: int) -> None:
        seen.setdefault(ctx["job_id"].split("-", 1)[0], []).append(
            (ctx["job_id"].split("-", 1)[1], item, attempt, ctx["job_try"]))

    redis = await create_pool(RedisSettings.from_dsn(embedded_redis))
    template = arq_adapter.payload_template("record")
    states, multis = [], []
    try:
        for cls in (Worker, QueueWorker):
            queue = f"wbtest:start:{cls.__name__}"
            ids = [f"{cls.__name__}-{i}" for i in range(3)]
            await redis.delete(queue, *(p + j for j in ids for p in
                                        (in_progress_key_prefix, job_key_prefix, retry_key_prefix)))
            for i, jid in enumerate(ids):
                await redis.zadd(queue, {jid: 1000 + i})
                if i != 2:  # the third job's payload is gone: ARQ fails it as expired
                    await redis.set(job_key_prefix + jid, template % (10 + i, 1, 1000))
            await redis.set(retry_key_prefix + ids[1], b"2")  # tried twice before
            worker = cls(functions=[func(record, name="record", max_tries=5)], redis_pool=redis,
                         queue_name=queue, handle_signals=False, keep_result=0,
                         job_serializer=job_dumps, job_deserializer=job_loads)
            await redis.config_resetstat()
            if cls is Worker:
                for i, jid in enumerate(ids):
                    await worker.run_job(jid, 1000 + i)
            else:
                await worker.start_jobs([j.encode() for j in ids])
                assert sorted(worker.tasks) == ids
                await asyncio.gather(*worker.tasks.values())
                await worker._riding().flush()  # the finishes ride with the next start call
            stats = await redis.info("commandstats")
            multis.append(stats.get("cmdstat_multi", {}).get("calls", 0))
            state = await _keys(redis, queue, ids)
            state["ttl"] = [await redis.ttl(retry_key_prefix + j) for j in ids]
            states.append(state)
        arq_state, ours = states
        assert seen["Worker"] == [("0", 10, 1, 1), ("1", 11, 1, 3)]
        assert seen["QueueWorker"] == seen["Worker"]
        assert {k: v for k, v in ours.items() if k != "ttl" and not k.startswith(
            in_progress_key_prefix)} == {k: v for k, v in arq_state.items() if k != "ttl"
                                         and not k.startswith(in_progress_key_prefix)}
        assert [t > 0 for t in ours["ttl"]] == [t > 0 for t in arq_state["ttl"]]
        # ours: only the expired job's failure, finished by ARQ's own finish_failed_job
        assert multis[1] == 1, f"QueueWorker sent {multis[1]} MULTI"
        assert multis[0] >= multis[1] + 3, "ARQ's own start no longer sends MULTI per job"
    finally:
        await redis.aclose()


async def test_finishes_ride_with_the_next_start_call(embedded_redis: str) -> None:
    """A job's finish is not waited for: it goes with the start call its freed slot brings about,
    before it, in one round trip; one Redis does not take hands its job back."""
    from arq.connections import create_pool
    from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix

    async def record(ctx: dict[str, Any], item: int, attempt: int) -> None:
        return None

    redis = await create_pool(RedisSettings.from_dsn(embedded_redis))
    template = arq_adapter.payload_template("record")
    queue = "wbtest:rides"
    ids = [f"rides-{i}" for i in range(3)]
    try:
        for i, jid in enumerate(ids):
            await redis.zadd(queue, {jid: 1000 + i})
            await redis.set(job_key_prefix + jid, template % (10 + i, 1, 1000))
        worker = QueueWorker(functions=[func(record, name="record")], redis_pool=redis,
                             queue_name=queue, handle_signals=False, keep_result=0,
                             job_serializer=job_dumps, job_deserializer=job_loads)
        await worker.start_jobs([j.encode() for j in ids])
        await asyncio.gather(*worker.tasks.values())
        rides = worker._riding()
        assert await redis.zcard(queue) == 3  # finished, not sent yet
        await worker._poll_once()  # the next start call: the finishes go first
        assert (rides.rode, rides.went_alone) == (3, 0)
        assert await redis.zcard(queue) == 0
        assert not await redis.exists(*(in_progress_key_prefix + j for j in ids))

        # a finish Redis does not take (the abort set is not a sorted set): its job handed back
        await redis.zadd(queue, {"rides-x": 1000})
        await redis.set(job_key_prefix + "rides-x", template % (20, 1, 1000))
        await redis.set(abort_jobs_ss, "not a sorted set")
        await worker.start_jobs([b"rides-x"])
        await asyncio.gather(*worker.tasks.values())
        await worker._poll_once()
        assert worker._handed_back == {"rides-x"}
    finally:
        await redis.delete(abort_jobs_ss, queue)
        await redis.aclose()
