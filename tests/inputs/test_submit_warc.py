"""WARC in and out through a real worker: export_warc -> submit_warc analyses the same bytes
(same content_sha256) with no network request; skipped records and bad files, on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from warcio.archiveiterator import ArchiveIterator

from tests.conftest import article_html
from tests.inputs.warc_fixtures import Builder
from workbench import Workbench
from workbench.core.errors import InvalidWARCError
from workbench.ledger.models import BatchRow, ItemRow


async def test_round_trip_export_then_submit_warc_without_network(
    wb: Workbench, site: Any, run_worker: Any, tmp_path: Path
) -> None:
    urls = [site.url(f"/page/{n}") for n in range(1, 5)]
    fetched = await wb.submit(urls, name="live")
    await run_worker(burst=True)
    assert (await fetched.wait(timeout=60))["done"] == 4
    live = (await fetched.results()).set_index("url")

    path = tmp_path / "batch.warc.gz"
    assert await fetched.export_warc(path) == 4
    with path.open("rb") as f:  # warcio, the reference reader, reads it
        records = [(r.rec_type, r.rec_headers.get_header("WARC-Target-URI"),
                    r.http_headers.get_statuscode() if r.http_headers else None)
                   for r in ArchiveIterator(f)]
    assert records[0][0] == "warcinfo"
    assert sorted(u for t, u, _ in records[1:] if t == "response") == sorted(urls)
    assert {s for _, _, s in records[1:]} == {"200"}

    hits_before = dict(site.hits)
    archived = await wb.submit_warc(path)
    assert archived.total == 4 and archived.use_stored_pages
    await run_worker(burst=True)
    assert (await archived.wait(timeout=60))["done"] == 4
    assert site.hits == hits_before  # no network request at all
    df = (await archived.results()).set_index("url")
    for url in urls:
        assert df.loc[url, "content_sha256"] == live.loc[url, "content_sha256"]
        assert df.loc[url, "title"] == live.loc[url, "title"]
        assert df.loc[url, "fetched_at"] == live.loc[url, "fetched_at"]
    assert df["from_stored_page"].all()
    assert set(df["warc_file"]) == {str(path)}
    assert df["warc_record_id"].str.startswith("<urn:uuid:").all()
    assert df["warc_offset"].dtype == "int64" and df["warc_offset"].is_unique
    status = await archived.status()
    assert list(status.columns[3:6]) == ["warc_file", "warc_record_id", "warc_offset"]


async def test_skipped_records_listed_not_items(wb: Workbench, run_worker: Any,
                                                tmp_path: Path) -> None:
    path = (Builder().warcinfo()
            .response("http://archived.test/a", article_html(1).encode())
            .response("http://archived.test/img", b"\x89PNG...", [("Content-Type", "image/png")])
            .response("http://archived.test/gone", b"gone", status="404 Not Found")
            .revisit("http://archived.test/a")
            .save(tmp_path / "mixed.warc.gz"))
    batch = await wb.submit_warc([path], name="mixed")
    assert batch.total == 1
    assert sorted(reason.split(":")[0] for _, _, reason in batch.invalid) == [
        "http_404", "unsupported_content", "warc_revisit"]
    await run_worker(burst=True)
    assert (await batch.wait(timeout=60))["done"] == 1
    results = await batch.results()
    assert results["url"].tolist() == ["http://archived.test/a"]
    assert results["title"].tolist() == ["River study 1"]

    again = await batch.rerun(pipeline="metadata")  # the provenance travels with a rerun
    await run_worker(burst=True)
    assert (await again.wait(timeout=60))["done"] == 1
    rerun = await again.results()
    assert rerun["warc_file"].tolist() == [str(path)]
    assert rerun["title"].tolist() == ["River study 1"]


async def test_not_a_warc_records_nothing(wb: Workbench, tmp_path: Path) -> None:
    bad = tmp_path / "notes.warc"
    bad.write_text("this is not an archive\n" * 20)
    with pytest.raises(InvalidWARCError, match=r"notes\.warc"):
        await wb.submit_warc(bad)
    async with wb.ledger.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(BatchRow))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(ItemRow))).scalar() == 0


async def test_captures_of_one_url_make_one_item_the_latest(
    wb: Workbench, run_worker: Any, tmp_path: Path
) -> None:
    url = "http://archived.test/twice"
    path = (Builder()
            .response(url, article_html(2).encode(),
                      warc_headers={"WARC-Date": "2024-05-01T00:00:00Z"})
            .response(url, article_html(1).encode(),
                      warc_headers={"WARC-Date": "2024-01-01T00:00:00Z"})
            .save(tmp_path / "twice.warc.gz"))
    batch = await wb.submit_warc(path)
    assert batch.total == 1
    assert [(pos, reason.split(":")[0]) for pos, _, reason in batch.invalid] == [
        (1, "duplicate_capture")]
    await run_worker(burst=True)
    assert (await batch.wait(timeout=60))["done"] == 1
    results = await batch.results()
    assert results["title"].tolist() == ["River study 2"]  # the May capture
    assert results["warc_offset"].tolist() == [0]
