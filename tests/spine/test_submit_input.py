"""Bad input to submit and friends: a clear error naming the problem, and nothing lost."""

from __future__ import annotations

import pytest

from workbench import Workbench
from workbench.core.errors import (
    BatchNotFoundError,
    EmptyBatchError,
    InvalidInputError,
    InvalidParamsError,
    InvalidURLError,
    UnknownPipelineError,
)
from workbench.core.urls import check_urls, normalize_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("HTTP://Example.COM", "http://example.com/"),
        ("https://example.com:443/a?b=1#frag", "https://example.com/a?b=1"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("  https://bücher.example/ ", "https://xn--bcher-kva.example/"),
        ("https://example.com./p", "https://example.com/p"),
        ("http://[::1]:8000/a", "http://[::1]:8000/a"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("ftp://example.com/", "scheme 'ftp'"),
        ("example.com/page", "no scheme"),
        ("http://", "no host"),
        ("https://exa mple.com", "whitespace"),
        ("", "empty"),
        (42, "not a string"),
        (None, "not a string"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "port"),
        ("javascript:alert(1)", "scheme"),
    ],
)
def test_invalid_entries_named(bad: object, reason: str) -> None:
    checked = check_urls(["https://ok.example/", bad])
    assert len(checked.valid) == 1
    assert checked.invalid[0][0] == 1 and checked.invalid[0][1] == bad
    assert reason in checked.invalid[0][2]


def test_dedupe_keeps_first_position() -> None:
    checked = check_urls(["http://a.example/x", "HTTP://A.example/x#y", "http://b.example/"])
    assert [v[0] for v in checked.valid] == [0, 2] and checked.duplicates == 1


async def test_submit_errors(wb: Workbench) -> None:
    with pytest.raises(InvalidURLError) as err:
        await wb.submit(["https://ok.example/", "nope", 3], pipeline="noop")
    assert [pos for pos, _, _ in err.value.invalid] == [1, 2]
    assert "'nope'" in str(err.value) and "not a string" in str(err.value)
    assert (await wb.batches()).empty  # nothing half-recorded
    with pytest.raises(UnknownPipelineError, match=r"'nope'.*known: .*article"):
        await wb.submit(["https://ok.example/"], pipeline="nope")
    with pytest.raises(InvalidParamsError, match="not JSON") as refused:
        await wb.submit(["https://ok.example/"], pipeline="noop", params={"f": object()})
    assert [name for name, _ in refused.value.fields] == ["f"]
    with pytest.raises(InvalidParamsError, match="not JSON") as refused:  # NaN is not JSON
        await wb.submit(["https://ok.example/"], pipeline="noop",
                        params={"ok": 1, "x": float("nan"), "y": [float("inf")]})
    assert [name for name, _ in refused.value.fields] == ["x", "y"]
    with pytest.raises(InvalidParamsError, match="must be a dict"):
        await wb.submit(["https://ok.example/"], pipeline="noop", params=[1])
    with pytest.raises(EmptyBatchError, match="no URLs"):
        await wb.submit([], pipeline="noop")
    with pytest.raises(EmptyBatchError, match="every URL is invalid"):
        await wb.submit(["bad"], pipeline="noop", on_invalid="skip")
    with pytest.raises(InvalidInputError, match="single string"):
        await wb.submit("https://ok.example/", pipeline="noop")
    with pytest.raises(InvalidInputError, match="on_invalid"):
        await wb.submit(["https://ok.example/"], pipeline="noop", on_invalid="ignore")
    with pytest.raises(BatchNotFoundError, match="b-missing"):
        await wb.get_batch("b-missing")


async def test_skip_keeps_valid_and_reports_rest(wb: Workbench) -> None:
    batch = await wb.submit(
        ["https://ok.example/1", "bad", "https://ok.example/2", "https://ok.example/1"],
        pipeline="noop",
        on_invalid="skip",
    )
    assert batch.total == 2
    assert batch.invalid == [(1, "bad", "has no scheme (expected http:// or https://)")]
    status = await batch.status()
    assert list(status["position"]) == [0, 2]


async def test_retry_given_ids_validated(wb: Workbench) -> None:
    batch = await wb.submit(["https://ok.example/1"], pipeline="noop")
    with pytest.raises(InvalidInputError, match="not in batch"):
        await batch.retry([999_999])
    with pytest.raises(InvalidInputError, match="integers"):
        await batch.retry(["x"])
    assert await batch.retry() == 0  # nothing failed yet
