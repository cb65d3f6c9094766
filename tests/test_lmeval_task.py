"""The project's own lm-eval task (`qwenphysics_title_choice`, written from held-out papers) and
lm-eval run on it for real: against the GGUF through llama.cpp and against the Hugging Face
model, which must choose the same option for every item."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from qwenphysics.evaluation import lmeval, mc_task
from qwenphysics.evaluation.exceptions import EvalError
from qwenphysics.evaluation.llama_scorer import split_pair


def test_the_task_is_written_from_the_test_split_in_lm_evals_format(tiny_dataset, tmp_path):
    test_ids = {json.loads(line)["id"] for line in (tiny_dataset / "test.jsonl").read_text().splitlines()}
    papers = mc_task.papers(tiny_dataset)
    assert len(papers) >= 4 and {pid for pid, _, _ in papers} <= test_ids  # held-out papers only
    include, n = mc_task.write_task(tiny_dataset, tmp_path / "a")
    items = [json.loads(line) for line in (include / f"{mc_task.TASK}.jsonl").read_text().splitlines()]
    assert n == len(items) == len(papers)
    by_id = {pid: (title, abstract) for pid, title, abstract in papers}
    for item in items:
        title, abstract = by_id[item["id"]]
        assert item["abstract"] == abstract and item["choices"][item["gold"]] == title
        assert len(set(item["choices"])) == mc_task.N_CHOICES
    assert len({item["gold"] for item in items}) > 1  # the answer is not always in one place
    config = yaml.safe_load((include / f"{mc_task.TASK}.yaml").read_text())
    assert config["task"] == mc_task.TASK and config["output_type"] == "multiple_choice"
    assert config["dataset_kwargs"]["data_files"]["test"] == str((include / f"{mc_task.TASK}.jsonl").resolve())
    # seeded: the same data gives the same task
    include2, _ = mc_task.write_task(tiny_dataset, tmp_path / "b")
    assert (include2 / f"{mc_task.TASK}.jsonl").read_bytes() == (include / f"{mc_task.TASK}.jsonl").read_bytes()


def test_too_few_held_out_papers_is_one_clear_error(tiny_dataset, tmp_path):
    small = tmp_path / "small"
    shutil.copytree(tiny_dataset, small)
    lines = (small / "test.jsonl").read_text().splitlines()
    (small / "test.jsonl").write_text("\n".join(lines[:1]) + "\n")
    with pytest.raises(EvalError, match="needs at least 4"):
        mc_task.write_task(small, tmp_path / "out")


def test_pairs_are_split_as_lm_eval_splits_them():
    assert split_pair("Title: ", "Foo") == ("Title:", " Foo")
    assert split_pair("Title:", " Foo") == ("Title:", " Foo")


def test_without_gguf_or_data_the_task_says_what_it_needs():
    res = lmeval.run([mc_task.TASK], None, None, gguf=None, data=None)
    assert res[mc_task.TASK]["skipped"].startswith("skipped: ") and "--gguf and --data" in res[mc_task.TASK]["skipped"]


@pytest.fixture(scope="module")
def both_backends(tiny_dataset, tiny_gguf, tiny_model_dir, train_python):
    gguf = lmeval.run_local_task(tiny_dataset, gguf=tiny_gguf, python=train_python, timeout=1200)
    hf = lmeval.run_local_task(tiny_dataset, hf_model=tiny_model_dir, python=train_python, timeout=1200)
    return gguf, hf


@pytest.mark.slow
def test_lm_eval_runs_the_task_on_llama_cpp_and_on_transformers(both_backends):
    for res in both_backends:
        assert "skipped" not in res, res  # a failed run is a failure, never a pass
        assert set(res["metrics"]) >= {"acc", "acc_norm"} and 0 <= res["metrics"]["acc"] <= 1
        assert len(res["items"]) == res["n_items"] >= 4 and res["lm_eval_version"]
    gguf, hf = both_backends
    assert (gguf["backend"], hf["backend"]) == ("llama.cpp", "hf")


@pytest.mark.slow
def test_both_backends_choose_the_same_option_for_every_item(both_backends):
    gguf, hf = both_backends
    assert [i["choice"] for i in gguf["items"]] == [i["choice"] for i in hf["items"]]
    assert gguf["metrics"]["acc"] == hf["metrics"]["acc"]
    # the same log-likelihoods, to F16 storage (the GGUF) against float32 (the HF model)
    for a, b in zip(gguf["items"], hf["items"]):
        for x, y in zip(a["loglikelihoods"], b["loglikelihoods"]):
            assert abs(x - y) <= 0.05 + 1e-3 * abs(y), (a, b)
