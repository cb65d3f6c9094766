"""The judge for free-form answers: verdict parsing, agreement with the automatic scorers, bad
settings refused before any work, and (slow) real runs with llama.cpp's server on the tiny
model as the judge (random weights, but JSON-schema-constrained, so its verdicts parse)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qwenphysics.evaluation import compare, judge, questions
from tests.conftest import ROOT


def _rec(qid, score, verdict=None, failure=None, category="quantum"):
    r = {"id": qid, "category": category, "score": score, "question": "q", "reference": "r", "answer": "a"}
    if verdict:
        r["judge"] = {"verdict": verdict, "reason": "x"}
    if failure:
        r["judge"] = {"failure": failure}
    return r


def test_parse_accepts_only_the_schema_verdicts():
    assert judge.parse('{"reason": " units right ", "verdict": "correct"}') == {"verdict": "correct",
                                                                               "reason": "units right"}
    assert judge.parse('{"reason": "x", "verdict": "partly_correct"}')["verdict"] == "partly_correct"
    for bad in (None, "", "correct", '{"verdict": "right"}', '["correct"]', '{"reason": "x"}', '{"reason": "x", '):
        assert judge.parse(bad) is None, bad


def test_agreement_counts_and_kappa():
    recs = [_rec("a", 1, "correct"), _rec("b", 0, "incorrect"), _rec("c", 0, "partly_correct"),
            _rec("d", 0, "correct"), _rec("e", 1, "incorrect"), _rec("f", 1, failure="judge_timeout"), _rec("g", 0)]
    a = judge.agreement(recs)
    # partly_correct counts as "not right"; failed and unjudged answers are left out
    assert (a["n"], a["both_right"], a["both_wrong"], a["judge_only"], a["scorer_only"]) == (5, 1, 2, 1, 1)
    assert a["rate"] == pytest.approx(3 / 5)
    p_chance = (2 / 5) * (2 / 5) + (3 / 5) * (3 / 5)
    assert a["kappa"] == pytest.approx((3 / 5 - p_chance) / (1 - p_chance))
    s = judge.summarize(recs)
    assert (s["judged"], s["correct"], s["partly_correct"], s["incorrect"]) == (5, 2, 1, 2)
    assert s["mean_credit"] == pytest.approx(2.5 / 5) and s["accuracy"] == pytest.approx(2 / 5)
    assert judge.agreement([_rec("x", 1)]) == {"n": 0, "rate": None, "both_right": 0, "both_wrong": 0,
                                               "judge_only": 0, "scorer_only": 0, "kappa": None}


def test_cache_key_changes_with_everything_a_verdict_depends_on():
    base = ("judge@sha256:1", "rubric-sha", {"temperature": 0.0}, "Q?", "ref", "answer")
    k = judge.cache_key(*base)
    assert k == judge.cache_key(*base)
    for i, other in enumerate(("judge@sha256:2", "rubric-2", {"temperature": 0.5}, "Q2?", "ref2", "answer2")):
        changed = list(base)
        changed[i] = other
        assert judge.cache_key(*changed) != k, i


def test_reason_cap_always_leaves_room_to_close_the_json():
    assert judge.reason_chars(1024) == judge.MAX_REASON_CHARS
    assert judge.reason_chars(300) == 300 - judge.JSON_OVERHEAD_TOKENS
    schema = judge.schema(judge.reason_chars(300))
    assert schema["properties"]["reason"]["maxLength"] == 76
    assert schema["properties"]["verdict"]["enum"] == list(judge.VERDICTS)


def test_rubric_holds_every_verdict_and_the_reference():
    text = judge.DEFAULT_RUBRIC.read_text()
    for v in judge.VERDICTS:
        assert f"{v}:" in text
    msgs = judge.messages(text, "What is g?", "9.81 m/s^2", "  ")
    assert msgs[0] == {"role": "system", "content": text}
    assert "Reference answer:\n9.81 m/s^2" in msgs[1]["content"] and "(empty)" in msgs[1]["content"]


def _evaluate(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fake_gguf(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 64)  # passes the magic check; never loaded by these tests
    return p


@pytest.mark.parametrize("args, fragment", [
    (["--judge-url", "http://127.0.0.1:9/v1", "--judge-gguf", "{gguf}"], "give one judge"),
    (["--judge-url", "127.0.0.1:9"], "--judge-url must start with http"),
    (["--judge-gguf", "{tmp}/none.gguf"], "--judge-gguf {tmp}/none.gguf: no such file"),
    (["--judge-gguf", "{tmp}/not.gguf"], "is not a GGUF file"),
    (["--judge-url", "http://127.0.0.1:9/v1", "--judge-rubric", "{tmp}/none.md"], "--judge-rubric"),
    (["--judge-url", "http://127.0.0.1:9/v1", "--judge-rubric", "{tmp}/empty.md"], "is empty"),
    (["--judge-url", "http://127.0.0.1:9/v1", "--judge-max-tokens", "100"], "--judge-max-tokens"),
    # unreachable: refused before the model is loaded or any question asked
    (["--judge-url", "http://127.0.0.1:9/v1"], "judge http://127.0.0.1:9/v1 is not reachable"),
])
def test_bad_judge_settings_one_line_exit_2_nothing_written(tmp_path, fake_gguf, args, fragment):
    (tmp_path / "not.gguf").write_text("text")
    (tmp_path / "empty.md").write_text("\n")
    args = [a.format(gguf=fake_gguf, tmp=tmp_path) for a in args]
    out = tmp_path / "r.json"
    p = _evaluate("--gguf", fake_gguf, "--no-lm-eval", "--out", out, *args, timeout=120)
    assert p.returncode == 2, p.stderr
    assert fragment.format(tmp=tmp_path) in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not out.exists()


def test_report_puts_the_judge_beside_the_scorers(tmp_path):
    recs = [_rec("a", 1, "correct"), _rec("b", 0, "correct"), _rec("c", 0, "incorrect"), _rec("d", 0, "partly_correct")]

    def results(name, with_judge):
        block = ({**judge.summarize(recs), "agreement": judge.agreement(recs), "failed": {"judge_timeout": 1},
                  "judge": {"identity": "big@sha256:1", "rubric": {"sha256": "r"}}}
                 if with_judge else {"skipped": judge.NO_JUDGE})
        return {"name": name, "model": {"model": name}, "qa": {"questions": recs, "correct": 1, "total": 4,
                "accuracy": 0.25, "by_category": {}}, "judge": block, "perplexity": {"skipped": "no"}}

    runs = [compare.Run("base", results("base", False), tmp_path),
            compare.Run("tuned", results("tuned", True), tmp_path)]
    text = compare.build_report(runs, tmp_path / "out")
    section = text.split("## Judge")[1].split("\n## ")[0]
    assert "| tuned | 2/4 | 1 | 50.0% | 0.62 | 75.0% of 4 | 0.50 | 1 not graded |" in section
    assert "| base | — |" in section and "no judge" in section
    only_base = compare.build_report(runs[:1], tmp_path / "out2")
    assert "No run was graded by a judge" in only_base


# -- real runs: llama.cpp's server on the tiny model is the judge ------------------------------

def _cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def _check_block(res: dict, n: int) -> dict:
    block = res["judge"]
    recs = res["qa"]["questions"]
    assert len(recs) == n
    for r in recs:  # every answer has a verdict of the schema, or the counted reason it has none
        assert r["judge"].get("verdict") in judge.VERDICTS or r["judge"]["failure"] in block["failed"]
    assert block["judged"] + sum(block["failed"].values()) == n and block["judged"] >= n // 2
    assert block["correct"] == sum(r["judge"].get("verdict") == "correct" for r in recs)
    agree = block["agreement"]
    same = sum((r["judge"]["verdict"] == "correct") == (r["score"] == 1) for r in recs if "verdict" in r["judge"])
    assert agree["n"] == block["judged"] and agree["rate"] == pytest.approx(same / agree["n"])
    assert block["judge"]["rubric"]["sha256"] and block["judge"]["sampling"]["temperature"] == 0.0
    return block


@pytest.mark.slow
def test_judge_at_a_url_grades_caches_and_asks_nothing_twice(llama_server, tiny_gguf, tmp_path):
    cache = tmp_path / "judge.sqlite"
    common = ["--gguf", tiny_gguf, "--limit", 6, "--max-tokens", 24, "--no-lm-eval", "--judge-url",
              llama_server.base_url, "--judge-cache", cache, "--judge-max-tokens", 320]
    env_key = {"JUDGE_API_KEY": llama_server.api_key}
    first = subprocess.run([sys.executable, ROOT / "scripts" / "evaluate.py", *map(str, common), "--out",
                            tmp_path / "a.json"], capture_output=True, text=True, timeout=600,
                           env={**os.environ, **env_key})
    assert first.returncode == 0, first.stderr[-3000:]
    a = _check_block(json.loads((tmp_path / "a.json").read_text()), 6)
    assert a["asked"] == 6 and a["from_cache"] == 0 and a["judge"]["identity"] == llama_server.model
    assert "judge [1/6]" in first.stderr and llama_server.api_key not in first.stderr
    assert _cache_rows(cache) == a["judged"]
    # the same answers again (greedy QA on the same GGUF): every verdict from the cache
    again = subprocess.run([sys.executable, ROOT / "scripts" / "evaluate.py", *map(str, common), "--out",
                            tmp_path / "b.json"], capture_output=True, text=True, timeout=600,
                           env={**os.environ, **env_key})
    assert again.returncode == 0, again.stderr[-3000:]
    b = _check_block(json.loads((tmp_path / "b.json").read_text()), 6)
    assert b["from_cache"] == a["judged"] and b["asked"] == 6 - a["judged"] and b["requests_sent"] == b["asked"]
    ra, rb = (json.loads((tmp_path / f"{n}.json").read_text())["qa"]["questions"] for n in "ab")
    assert [r["judge"].get("verdict") for r in ra] == [r["judge"].get("verdict") for r in rb]
    # a wrong key is refused at the start, in one line
    bad = subprocess.run([sys.executable, ROOT / "scripts" / "evaluate.py", *map(str, common), "--out",
                          tmp_path / "c.json"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JUDGE_API_KEY": "wrong"})
    assert bad.returncode == 2 and "refused the API key" in bad.stderr and not (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_judge_gguf_started_only_when_needed_and_compared(tiny_gguf, tmp_path):
    cache = tmp_path / "judge.sqlite"
    common = ["--gguf", tiny_gguf, "--limit", 4, "--max-tokens", 24, "--no-lm-eval", "--judge-gguf", tiny_gguf,
              "--judge-cache", cache, "--judge-max-tokens", 320]
    p = _evaluate(*common, "--out", tmp_path / "judged.json")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "judge: starting llama.cpp's server" in p.stderr
    block = _check_block(json.loads((tmp_path / "judged.json").read_text()), 4)
    assert block["judge"]["identity"].startswith("tiny-qwen2.5-f16@sha256:")
    p = _evaluate(*common, "--out", tmp_path / "again.json")
    assert p.returncode == 0, p.stderr[-3000:]
    # the judge is loaded again only for what the cache lacks: nothing, when every answer was graded
    assert ("starting llama.cpp's server" in p.stderr) == (block["judged"] < 4)
    assert json.loads((tmp_path / "again.json").read_text())["judge"]["asked"] == 4 - block["judged"]
    plain = _evaluate("--gguf", tiny_gguf, "--limit", 4, "--max-tokens", 24, "--no-lm-eval",
                      "--name", "unjudged", "--out", tmp_path / "unjudged.json")
    assert plain.returncode == 0
    assert json.loads((tmp_path / "unjudged.json").read_text())["judge"] == {"skipped": judge.NO_JUDGE}
    c = subprocess.run([sys.executable, ROOT / "scripts" / "compare.py", tmp_path / "unjudged.json",
                        tmp_path / "judged.json", "--out", tmp_path / "cmp"], capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Judge" in report and f"| judged | {block['correct']}/{block['judged']} |" in report
    assert questions.load().questions[0].id in json.dumps(json.loads((tmp_path / "judged.json").read_text()))
