"""lm-eval gating: local-cache detection and the recorded skip reasons."""

import importlib.util
import sys

from qwenphysics.evaluation import lmeval


def _env(tmp_path):
    return {"HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}


def test_cache_dirs_follow_the_environment(tmp_path):
    hub, ds = lmeval.cache_dirs({"HF_HOME": "/h", "HF_DATASETS_CACHE": "/d"})
    assert hub == [lmeval.Path("/h/hub")] and ds == [lmeval.Path("/d"), lmeval.Path("/h/datasets")]
    hub, _ = lmeval.cache_dirs({"HF_HUB_CACHE": "/x", "HF_HOME": "/h"})
    assert hub[0] == lmeval.Path("/x")


def test_dataset_detection_in_hub_and_datasets_caches(tmp_path):
    env = _env(tmp_path)
    assert not lmeval.task_data_available("mmlu_college_physics", env)
    snap = tmp_path / "hf" / "hub" / "datasets--cais--mmlu" / "snapshots" / "abc"
    (snap / "astronomy").mkdir(parents=True)
    (snap / "astronomy" / "test.parquet").write_bytes(b"x")
    assert lmeval.task_data_available("mmlu_astronomy", env)
    assert not lmeval.task_data_available("mmlu_college_physics", env)  # other config missing
    sciq = tmp_path / "hf" / "datasets" / "allenai___sciq" / "default"
    sciq.mkdir(parents=True)
    assert lmeval.task_data_available("sciq", env)


def test_skip_reasons(tmp_path):
    tasks = ["mmlu_astronomy", "sciq"]
    no_server = lmeval.run(tasks, None, None)
    assert all(r["skipped"].startswith("skipped: hub tasks need a served model") for r in no_server.values())
    res = lmeval.run(tasks, "http://127.0.0.1:9/v1", "m", python=sys.executable, env=_env(tmp_path))
    assert set(res) == set(tasks)
    if importlib.util.find_spec("lm_eval") is None:
        assert all(r["skipped"].startswith("skipped: lm_eval not installed") for r in res.values())
    else:
        assert res["sciq"]["skipped"] == "skipped: task data for sciq not in the local datasets cache"
    missing = lmeval.run(tasks, "http://127.0.0.1:9/v1", "m", python="/nonexistent/python")
    assert all("lm_eval not installed" in r["skipped"] for r in missing.values())


def test_metrics_drop_filter_suffix():
    m = lmeval._metrics({"alias": "sciq", "acc,none": 0.5, "acc_stderr,none": 0.01, "acc_norm,none": 0.6})
    assert m == {"acc": 0.5, "acc_stderr": 0.01, "acc_norm": 0.6}
