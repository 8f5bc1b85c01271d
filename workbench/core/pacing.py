"""The per-host pacing rule: when the next request to a host may start, and how the gap between
requests follows the host's answers. Pure: no I/O, no clock (times are passed in, in seconds).

This is the rule's one statement in Python. ``pipeline/fetch/pacing.LocalPacer`` runs it for a
fetcher on its own; ``queue/hosts.py`` runs its twin as Lua inside Redis, so that every worker
process and machine sharing the queue shares one schedule per host (tests/pipeline/test_pacing.py
runs the same checks against both). Change one, change the other.

The gap between two request starts to a host::

    gap = max(1.05 * max(floor, crawl_delay), min(ceiling, max(latency_gap, penalty)))

- ``floor`` is ``per_host_delay_s`` and ``crawl_delay`` the host's robots.txt Crawl-delay (or
  Request-rate): both always hold, as the site sees them: a request leaves a few milliseconds after
  its granted start (timer, event loop, connection), and two in a row by unequal amounts, so the
  hard delays get a 5 % margin (measured with two worker processes and Crawl-delay 1: the closest
  requests arrived 0.950 s apart without it, 1.014-1.047 s with it). ``ceiling``
  (``per_host_max_delay_s``) bounds the adaptation, never a Crawl-delay.
- ``latency_gap`` follows the host's response time like Scrapy's AutoThrottle: each response of
  ``t`` seconds moves it halfway to ``t / target_concurrency``, so about ``target_concurrency``
  requests are in flight on average: a loopback site answering in 2 ms is paced at ~2 ms, a site
  answering in 800 ms at ~800 ms, with nothing special-cased.
- ``penalty`` is the back-off: a 429 doubles it (at least 1 s: the host said "too many"); a 503 or
  a timeout doubles it (at least 0.25 s); at least twice the latency gap either way. Only once per
  round trip: an answer to a request that started before the last back-off does not double it
  again (four requests in flight that all get 429 are one signal, not four). Each success takes
  10 % off it (half-life ~7 successes): recovery is slow, back-off fast.
- A ``Retry-After`` on a 429/503 also pauses the host until then.
- Slow start: at most ``1 + successes since the last 429/503/timeout`` requests in flight, up to
  ``per_host_concurrency``; a throttled host drops back to one request at a time.
- A request whose start is further away than its caller may wait is deferred (``defer``, with
  the time to the host's next free start). Who waits in which order, and when each comes back,
  is the worker's line per host (``queue/lines.py``), not this rule.

A request takes a *lease* when it is granted a start time; the lease counts towards the host's
concurrency until it is released with the outcome (or expires, if its process died).

A granted start is a reservation; a request that has to sleep for it confirms its turn when it
wakes (``confirm``): at least a gap after the last confirmed start, else it sleeps the rest.
Sleepers woken late together (an event loop blocked for a second: measured in a worker sharing its
loop with the test's sites, three requests of a Crawl-delay 0.5 host within 0.1 s) would
otherwise go out together. A request granted a start of "now" goes at once: the grant records it.
And a request that leaves late all the same (its process busy between the grant and the send:
80-460 ms in that test) records when it did leave (``touch``), so the next turn counts from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from workbench.core.settings import Settings

__all__ = [
    "HARD_MARGIN",
    "OUTCOMES",
    "HostPace",
    "Outcome",
    "PacingRule",
    "Verdict",
    "acquire",
    "confirm",
    "gap_s",
    "release",
    "set_crawl_delay",
    "touch",
]

#: how a request ended, for the rule: ``ok`` (any answer below 400), ``http_error`` (another
#: 4xx/5xx), ``too_many`` (429), ``overloaded`` (503 or a timeout), ``error`` (no answer:
#: refused, reset...), ``cancelled`` (never sent, or given up: only frees the lease)
Outcome = Literal["ok", "http_error", "too_many", "overloaded", "error", "cancelled"]
OUTCOMES: tuple[str, ...] = ("ok", "http_error", "too_many", "overloaded", "error", "cancelled")
#: ``go`` (start after ``wait_s``; holds a lease), ``busy`` (the host's concurrency is taken:
#: ask again after ``wait_s``), ``defer`` (the next free start is more than ``max_wait_s`` away:
#: come back in ``wait_s``; the host keeps that start for the caller's return)
Verdict = tuple[Literal["go", "busy", "defer"], float, str]
#: on the floor and the Crawl-delay, so they hold as the site sees them (module docstring)
HARD_MARGIN = 1.05


@dataclass(frozen=True)
class PacingRule:
    """The rule's numbers. ``from_settings`` takes the configurable ones from ``Settings``."""

    floor_s: float = 0.0
    ceiling_s: float = 60.0
    target_concurrency: float = 1.0
    max_concurrency: int = 4
    lease_ttl_s: float = 75.0  # a lease outlives any fetch; then its holder is presumed dead
    backoff_factor: float = 2.0
    recover_factor: float = 0.9
    too_many_step_s: float = 1.0
    overloaded_step_s: float = 0.25
    hard_margin: float = HARD_MARGIN

    @classmethod
    def from_settings(cls, settings: Settings) -> PacingRule:
        return cls(
            floor_s=settings.per_host_delay_s,
            ceiling_s=max(settings.per_host_max_delay_s, settings.per_host_delay_s),
            target_concurrency=settings.per_host_target_concurrency,
            max_concurrency=settings.per_host_concurrency,
            lease_ttl_s=settings.fetch_timeout_s + 30.0,
        )


@dataclass
class HostPace:
    """The pacing state of one host (the fields of its Redis hash, in seconds)."""

    next_at: float = 0.0  # earliest start of the next granted request
    paused_until: float = 0.0  # Retry-After
    latency_gap: float = 0.0
    penalty: float = 0.0
    backoff_at: float = 0.0  # when penalty last grew
    crawl_delay: float = 0.0
    streak: int = 0  # successes since the last throttle (slow start)
    last_at: float = 0.0  # start of the last granted request
    last_sent: float = 0.0  # the last confirmed start (``confirm``)
    requests: int = 0
    errors: int = 0
    throttled: int = 0
    deferred: int = 0
    #: lease -> (granted start, expiry)
    leases: dict[str, tuple[float, float]] = field(default_factory=dict)


def gap_s(state: HostPace, rule: PacingRule) -> float:
    """The current gap between request starts to the host."""
    adaptive = min(rule.ceiling_s, max(state.latency_gap, state.penalty))
    return max(rule.hard_margin * max(rule.floor_s, state.crawl_delay), adaptive)


def busy_poll_s(state: HostPace) -> float:
    """How long to wait before asking again when the host's concurrency is taken."""
    return min(0.5, max(0.01, state.latency_gap))


def acquire(
    state: HostPace, rule: PacingRule, now: float, *, max_wait_s: float | None, lease_id: str
) -> Verdict:
    """Grant a start time (``go``), or say why not (``busy``, ``defer``). ``max_wait_s=None``:
    the caller waits however long it takes (it cannot defer)."""
    for lease, (_start, expiry) in list(state.leases.items()):
        if expiry < now:
            del state.leases[lease]
    gap = gap_s(state, rule)
    # the next reserved start, and never less than a gap after the last request that went
    start = max(now, state.next_at, state.paused_until, state.last_sent + gap)
    if max_wait_s is None or start - now <= max_wait_s:
        if len(state.leases) >= min(rule.max_concurrency, 1 + state.streak):
            return ("busy", busy_poll_s(state), "")
        state.next_at = start + gap
        state.last_at = start
        if start <= now:  # goes at once: its grant is its confirmation
            state.last_sent = now
        state.requests += 1
        lease = f"{start!r}:{lease_id}"
        state.leases[lease] = (start, start + rule.lease_ttl_s)
        return ("go", start - now, lease)
    state.deferred += 1
    return ("defer", start - now, "")


def confirm(state: HostPace, rule: PacingRule, now: float) -> float:
    """A request that slept for its turn, awake: 0 if it may go now (and it is recorded), else
    how much longer to wait."""
    wait = state.last_sent + gap_s(state, rule) - now
    if wait > 0:
        return wait
    state.last_sent = now
    return 0.0


def touch(state: HostPace, now: float) -> None:
    """A request left later than its turn said: the next turns count from now."""
    state.last_sent = max(state.last_sent, now)


def release(
    state: HostPace,
    rule: PacingRule,
    now: float,
    lease: str,
    outcome: Outcome,
    *,
    latency_s: float = 0.0,
    retry_after_s: float = 0.0,
) -> None:
    """Free a lease and let the outcome move the host's gap."""
    start = state.leases.pop(lease, (now, now))[0]
    if outcome == "ok":
        state.streak += 1
        target = latency_s / rule.target_concurrency
        state.latency_gap = target if state.latency_gap <= 0 else (state.latency_gap + target) / 2
        state.penalty *= rule.recover_factor
        if state.penalty < 0.001:
            state.penalty = 0.0
    elif outcome in ("too_many", "overloaded"):
        state.errors += 1
        state.throttled += 1
        state.streak = 0
        if start > state.backoff_at:  # once per round trip
            step = rule.too_many_step_s if outcome == "too_many" else rule.overloaded_step_s
            state.penalty = min(
                rule.ceiling_s,
                max(state.penalty * rule.backoff_factor, step, 2 * state.latency_gap),
            )
            state.backoff_at = now
        if retry_after_s > 0:
            state.paused_until = max(state.paused_until, now + retry_after_s)
        state.next_at = max(state.next_at, now + gap_s(state, rule))
    elif outcome in ("http_error", "error"):
        state.errors += 1


def set_crawl_delay(state: HostPace, rule: PacingRule, crawl_delay_s: float) -> None:
    """A Crawl-delay learnt from robots.txt; it already spaces the request after robots.txt."""
    state.crawl_delay = crawl_delay_s
    state.next_at = max(state.next_at, state.last_at + crawl_delay_s * rule.hard_margin)
