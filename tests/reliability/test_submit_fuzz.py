"""Fuzzed ``submit`` input (hypothesis), through a real ledger and Redis: every bad entry is named
in ``InvalidURLError.invalid`` with its position and a reason, nothing else is raised, and with
``on_invalid="skip"`` every valid entry is kept (deduplicated)."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import SyncWorkbench
from workbench.core.errors import EmptyBatchError, InvalidURLError
from workbench.core.urls import normalize_url

from .conftest import report

_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
_host = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                  st.lists(_label, min_size=1, max_size=3), st.sampled_from(["org", "com", "io"]))
_segment = st.text(string.ascii_letters + string.digits + "-._~", min_size=0, max_size=12)
_good = st.builds(
    lambda scheme, host, port, path, query: (
        f"{scheme}://{host}{port}/{'/'.join(path)}{'?q=' + query if query else ''}"
    ),
    st.sampled_from(["http", "https", "HTTP", "hTTps"]),
    _host,
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    st.lists(_segment, max_size=4),
    st.text(string.ascii_letters + string.digits, max_size=8),
)
_not_a_string = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.binary(),
                          st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.text(), st.text(), max_size=1))
_bad_string = st.one_of(
    st.just(""), st.just("   "),
    _good.map(lambda u: "ftp" + u[u.index(":"):]),
    _good.map(lambda u: "javascript:alert(1)//" + u),
    _good.map(lambda u: u.split("://", 1)[1]),  # no scheme
    # inside the URL: leading and trailing whitespace is stripped on purpose
    st.builds(lambda u, c, i: u[: 1 + i % (len(u) - 1)] + c + u[1 + i % (len(u) - 1):], _good,
              st.sampled_from([" ", "\t", "\n", "\x00", "\x7f", "\u00a0", "\u3000"]),
              st.integers(0, 200)),
    st.sampled_from(["http://", "https:///path", "http://:80/", "http://host:0/", "http://host:70000/",
                     "http://user:pw@example.org/", "http://..example.org/", "mailto:a@b.org"]),
    st.builds(lambda n: "http://example.org/" + "a" * n, st.integers(8200, 9000)),
)
_entry = st.one_of(
    _good.map(lambda u: ("good", u)),
    _not_a_string.map(lambda v: ("bad", v)),
    _bad_string.map(lambda v: ("bad", v)),
    st.text(max_size=40).map(lambda v: ("any", v)),
)


@pytest.fixture
def sync_wb(make_cluster) -> Any:
    cluster = make_cluster()
    wb = SyncWorkbench(**{**cluster.settings, "pipelines": "relpipes"})
    yield wb
    wb.__exit__(None, None, None)


# examples run; entries named invalid; valid entries expected (distinct after normalizing) and kept
_stats = {"examples": 0, "bad_named": 0, "valid_expected": 0, "kept": 0}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(_entry, min_size=1, max_size=25))
def test_fuzzed_submit(sync_wb: Any, entries: list[tuple[str, Any]]) -> None:
    values = [v for _, v in entries]
    known_bad = {i for i, (kind, _) in enumerate(entries) if kind == "bad"}
    known_good = {i for i, (kind, _) in enumerate(entries) if kind == "good"}
    valid_norms: dict[str, int] = {}
    for i, v in enumerate(values):
        try:
            valid_norms.setdefault(normalize_url(v), i)
        except ValueError:
            pass

    try:
        sync_wb.submit(values, pipeline="rel-sleep")
    except InvalidURLError as exc:
        named = {pos for pos, _, _ in exc.invalid}
        assert known_bad <= named and not (known_good & named), entries
        for pos, entry, reason in exc.invalid:
            assert entry is values[pos] and isinstance(reason, str) and reason
        assert str(len(exc.invalid)) in str(exc)
    except EmptyBatchError:
        assert not valid_norms
    else:
        assert not known_bad, entries

    try:
        batch = sync_wb.submit(values, pipeline="rel-sleep", on_invalid="skip")
    except EmptyBatchError:
        assert not valid_norms
        return
    assert batch.total == len(valid_norms)  # every valid entry kept, duplicates folded
    skipped = {pos for pos, _, _ in batch.invalid}
    assert known_bad <= skipped and not (known_good & skipped)
    assert batch.counts()["queued"] == batch.total
    _stats["examples"] += 1
    _stats["bad_named"] += len(skipped)
    _stats["valid_expected"] += len(valid_norms)
    _stats["kept"] += batch.total


@pytest.fixture(scope="module", autouse=True)
def _fuzz_summary() -> Iterator[None]:
    """Not a test: after this module, the figures the fuzz test measured go to the summary."""
    yield
    if _stats["examples"]:
        report("fuzzed submit input (hypothesis)", **_stats)


_url_chars = string.ascii_letters + string.digits + "-._~/?=&%:@!$'()*+,;#[]"
_url_like = st.one_of(
    _good,
    st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(["http", "HTTPS", "ftp"]),
              st.text(string.ascii_letters + string.digits + "-.:@_[]", min_size=1, max_size=20),
              st.text(_url_chars, max_size=30)),
)


@settings(max_examples=500, deadline=None)
@given(url=_url_like)
def test_plain_url_fast_path_agrees_with_yarl(url: str) -> None:
    """The regex fast path of normalize_url gives exactly what parsing with yarl gives."""
    from workbench.core.urls import _normalize_plain, _normalize_with_yarl

    fast = _normalize_plain(url)
    if fast is None:
        return
    assert fast == _normalize_with_yarl(url)


# -- issue 14: the other inputs of a submit (notify, params, name), fuzzed the same way: each is
# accepted as something safe to store and send, or refused with an InvalidInputError naming it
_surrogate = st.sampled_from(["\ud800", "\udfff", "\udc00x"])
_address = st.builds(lambda local, host: f"{local}@{host}", _label, _host)
_notify = st.one_of(
    st.lists(_address, min_size=1, max_size=12).map(", ".join),
    st.builds(lambda a, b, sep: f"{a}{sep}Bcc: {b}", _address, _address,
              st.sampled_from(["\r\n", "\n", "\r", ","])),
    st.builds(lambda a, s: a + s, _address, _surrogate),
    st.sampled_from(["@", "a@", "@b.org", "a@b", "Ana <a@b.org>", "a@b.org>", '"a"@b.org',
                     "a@@b.org", "a..b@c.org", "\u00e9@b.org", ""]),
    st.text(max_size=40),
)
_article_params = st.dictionaries(
    st.sampled_from(["max_keywords", "min_chars", "include_text", "embed", "llm_max_chars",
                     "no_such_param"]),
    st.one_of(st.integers(-10, 2_000_000), st.booleans(), st.text(max_size=5), st.none(),
              st.floats(allow_nan=False)),
    max_size=4,
)
_name = st.one_of(st.none(), st.text(max_size=30), st.builds(lambda a, s: a + s, st.text(
    max_size=10), _surrogate), st.just("n" * 201))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(notify=st.one_of(st.none(), _notify), params=_article_params, name=_name,
       url=st.one_of(_good, st.builds(lambda u, s: u + s, _good, _surrogate)))
def test_fuzzed_notify_params_and_name(sync_wb: Any, notify: str | None,
                                       params: dict[str, Any], name: str | None,
                                       url: str) -> None:
    from workbench.core.errors import InvalidInputError, InvalidParamsError
    from workbench.pipeline.builtin import ArticleParams

    try:
        batch = sync_wb.submit([url], pipeline="article", params=params, name=name,
                               notify=notify, on_invalid="skip")
    except InvalidParamsError as exc:
        assert exc.fields, exc  # names the param(s)
        with pytest.raises(ValueError):
            ArticleParams.model_validate(params)
        return
    except InvalidInputError as exc:
        assert str(exc), exc
        return
    ArticleParams.model_validate(params)  # what was accepted is what the pipeline declares
    assert sync_wb.get_batch(batch.id).name == name  # stored and read back as given
    if notify is not None:  # one line of plain addresses, at most notify.email.MAX_RECIPIENTS
        from workbench.notify.email import MAX_RECIPIENTS, parse_recipients

        assert "\r" not in notify and "\n" not in notify and notify.isascii()
        assert 1 <= len(parse_recipients(notify)) <= MAX_RECIPIENTS

