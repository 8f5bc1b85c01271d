"""``queue/rides.py`` on a real Redis: the end of a request rides with the pacer's next call (one
round trip for both, in order), goes alone after its linger, and a lost script or a failing ride
costs the call nothing."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from workbench.core.settings import Settings
from workbench.queue import hosts
from workbench.queue.arq_adapter import QueueRedis
from workbench.queue.hosts import RedisHostPacer, host_rows
from workbench.queue.rides import Rides

H = "rides.example"


@pytest.fixture
def redis(embedded_pool: QueueRedis) -> QueueRedis:
    return embedded_pool  # not conftest's ``redis``: these tests need no ledger, one backend


def _pacer(redis: QueueRedis) -> tuple[RedisHostPacer, Settings]:
    settings = Settings(queue_name=f"wbrides:{uuid.uuid4().hex[:8]}", per_host_delay_s=0.0)
    return RedisHostPacer(redis, settings), settings


async def _in_flight(redis: QueueRedis, settings: Settings) -> int:
    (row,) = await host_rows(redis, settings)
    return int(row["in_flight"])


async def test_a_release_rides_with_the_next_acquire_in_one_round_trip(redis) -> None:
    pacer, settings = _pacer(redis)
    verdict, _, lease = await pacer.acquire(H, max_wait_s=None)
    assert verdict == "go"
    pacer.release_soon(H, lease, "ok", latency_s=0.01, retry_after_s=0.0)
    assert await _in_flight(redis, settings) == 1  # not sent yet
    sent: list[int] = []
    real = redis.pipeline

    def counting(*args, **kwargs):
        sent.append(1)
        return real(*args, **kwargs)

    redis.pipeline = counting  # type: ignore[method-assign]
    try:
        # a new host takes one request at a time: "go" only if the release went first
        verdict, _, lease = await pacer.acquire(H, max_wait_s=None)
    finally:
        del redis.pipeline
    assert verdict == "go" and sent == [1]
    assert (pacer._rides.rode, pacer._rides.went_alone) == (1, 0)
    await pacer.release(H, lease, "ok", latency_s=0.01, retry_after_s=0.0)  # waits: sent now
    assert await _in_flight(redis, settings) == 0
    (row,) = await host_rows(redis, settings)
    assert row["requests"] == 2 and row["response_gap_s"] > 0


async def test_with_no_call_to_ride_with_it_goes_alone_after_its_linger(
    redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts, "RELEASE_LINGER_S", 0.1)
    pacer, settings = _pacer(redis)
    leases = [(await pacer.acquire(H, max_wait_s=None))[2]]
    pacer.release_soon(H, leases[0], "ok", latency_s=0.0, retry_after_s=0.0)
    await asyncio.sleep(0.03)
    assert await _in_flight(redis, settings) == 1
    await asyncio.sleep(0.2)
    assert await _in_flight(redis, settings) == 0
    assert (pacer._rides.rode, pacer._rides.went_alone) == (0, 1)


async def test_scripts_the_server_lost_are_loaded_again(redis) -> None:
    pacer, settings = _pacer(redis)
    _, _, lease = await pacer.acquire(H, max_wait_s=None)
    await redis.script_flush()  # as after a restart of Redis without its scripts
    pacer.release_soon(H, lease, "ok", latency_s=0.0, retry_after_s=0.0)
    verdict, _, lease = await pacer.acquire(H, max_wait_s=None)
    assert verdict == "go"
    await redis.script_flush()
    await pacer.release(H, lease, "ok", latency_s=0.0, retry_after_s=0.0)
    assert await _in_flight(redis, settings) == 0


async def test_a_failing_ride_is_logged_and_costs_the_call_nothing(
    redis, caplog: pytest.LogCaptureFixture
) -> None:
    rides = Rides(redis, linger_s=10.0, what="test calls")
    failing = redis.register_script("return redis.error_reply('refused by the test')")
    answer = redis.register_script("return ARGV[1]")
    rides.add(failing, [], [])
    rides.add(answer, [], ["a ride that works"])
    with caplog.at_level(logging.WARNING):
        assert await rides.call(answer, [], ["the call"]) == b"the call"
    assert rides.rode == 2
    lost = [r.getMessage() for r in caplog.records if "calls sent later failed" in r.getMessage()]
    assert len(lost) == 1 and "refused by the test" in lost[0], lost
    rides.add(failing, [], [])
    with pytest.raises(Exception, match="refused by the test"):
        await rides.flush()  # flush raises: its caller waits for it


async def test_cancelling_a_call_does_not_drop_what_rides_with_it(redis) -> None:
    """A fetch cancelled while its acquire is in flight (a job's timeout, a worker stopping): the
    end of the request riding with it still lands."""
    pacer, settings = _pacer(redis)
    _, _, first = await pacer.acquire(H, max_wait_s=None)
    pacer.release_soon(H, first, "ok", latency_s=0.0, retry_after_s=0.0)
    acquiring = asyncio.create_task(pacer.acquire(H, max_wait_s=None))
    await asyncio.sleep(0)  # the pipeline is on its way
    acquiring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await acquiring
    await pacer.flush()  # waits for the send in flight
    assert (pacer._rides.rode, pacer._rides.went_alone) == (1, 0)
    leases = await redis.zrange(f"{settings.queue_name}:host:{H}:leases", 0, -1)
    assert first.encode() not in leases  # freed; the cancelled acquire's own lease expires
