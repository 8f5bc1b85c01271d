"""The article pipeline's optional steps through the whole system: embeddings and the LLM.

The LLM endpoint is an OpenAI-compatible test server on loopback (a paid API cannot run here):
it checks the protocol and the plumbing into results, not a model.
"""

from __future__ import annotations

import numpy as np

from tests.pipeline.test_embed import DIM, build_tiny_model
from tests.pipeline.test_llm import FakeLLM, fake  # noqa: F401 - the fixture
from workbench import Workbench


async def test_embeddings_come_back_as_a_matrix(make_wb, run_worker, site, tmp_path) -> None:
    model = build_tiny_model(tmp_path / "tiny-model")
    wb: Workbench = make_wb()
    urls = [site.url(f"/page/{i}") for i in range(3)]
    batch = await wb.submit(urls, pipeline="article", params={"embed_model": str(model)})
    await run_worker(cpu_processes=1)
    assert (await batch.wait(timeout=30))["done"] == 3
    matrix, index = await batch.embeddings()
    assert matrix.shape == (3, DIM) and matrix.dtype == np.float32
    assert list(index) == sorted(index) and len(set(index)) == 3
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


async def test_llm_step_records_answer_and_usage(make_wb, run_worker, site, fake) -> None:
    llm, url = fake
    wb: Workbench = make_wb(llm_url=url, llm_model="test-model")
    batch = await wb.submit(
        [site.url("/page/7")], pipeline="article",
        params={"llm_prompt": "Summarise {title} in one line.", "include_text": False},
    )
    await run_worker(cpu_processes=1, llm_url=url, llm_model="test-model")
    assert (await batch.wait(timeout=30))["done"] == 1
    row = (await batch.results()).iloc[0]
    assert row["llm_answer"] == "echo: Summarise River study 7 in one line."
    assert row["llm_model"] == "test-model" and row["llm_usage"]["total_tokens"] > 3
    assert "text" not in row.index and "llm" in row["timings"]
    assert llm.requests[0]["model"] == "test-model"


async def test_llm_bad_template_fails_permanently(make_wb, run_worker, site, fake) -> None:
    _, url = fake
    wb: Workbench = make_wb(llm_url=url)
    batch = await wb.submit([site.url("/page/1")], pipeline="article",
                            params={"llm_prompt": "About {nonsense}"})
    await run_worker(cpu_processes=1, llm_url=url)
    f = await batch.failures()
    assert f.loc[0, "error_type"] == "prompt_field_missing"
    assert "nonsense" in f.loc[0, "error_message"]
