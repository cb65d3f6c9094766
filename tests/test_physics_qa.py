"""Contexts that turn papers into tasks: the teacher's physics Q&A (llama.cpp's server on the
tiny model as the teacher: random weights, but JSON-schema-constrained, so parseable) and the
rule-mined reading comprehension. Hand-written pairs prove each filter."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dataset_builders import cli, contexts
from dataset_builders.contamination import Contamination
from dataset_builders.qa.pairs import PairFilter, PairRules, parse
from dataset_builders.qa.reading import GAP, mine
from qwenphysics.core.llama_server import LlamaServer
from qwenphysics.core.paths import EVALUATION_QUESTIONS
from tests.conftest import ROOT, run

SOURCE = ("Superconductivity in cuprates. Below the critical temperature the electrical resistance "
          "vanishes and magnetic flux is expelled (the Meissner effect). Cooper pairs of electrons "
          "bound by phonon exchange carry the supercurrent; the energy gap scales with the critical "
          "temperature as $\\Delta \\approx 1.76\\, k_B T_c$ in BCS theory.")
GOOD = {"kind": "result", "question": "Why does the resistance of a superconductor vanish below $T_c$?",
        "answer": "Below the critical temperature electrons bind into Cooper pairs through phonon exchange; "
                  "the condensate carries a supercurrent without resistance, and the energy gap "
                  "$\\Delta \\approx 1.76\\, k_B T_c$ protects it from scattering."}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def all_examples(out: Path) -> list[dict]:
    return [x for s in ("train", "validation", "test") for x in lines(out / f"{s}.jsonl")]


def outputs(out: Path) -> list[bytes]:
    return [(out / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test")]


# -- the pair filters, one hand-written pair per reason ----------------------------------------

@pytest.mark.parametrize("pair, reason", [
    (GOOD, None),
    ({**GOOD, "question": "Why?"}, "too_short"),
    ({**GOOD, "answer": "x" * 3000}, "too_long"),
    ({**GOOD, "question": "What do the authors of this paper measure in cuprates?"}, "refers_to_paper"),
    ({**GOOD, "question": "Why do we find that the resistance vanishes below $T_c$?"}, "refers_to_paper"),
    ({**GOOD, "answer": "As shown in this work, " + GOOD["answer"]}, "refers_to_paper"),
    ({"kind": "result", "question": "Is it true that the Meissner effect expels magnetic flux from a superconductor?",
      "answer": "the Meissner effect expels magnetic flux from a superconductor"}, "answer_in_question"),
    ({**GOOD, "answer": "Quarks hadronize into jets whose rapidity distributions follow "
                        "perturbative splitting kernels with logarithmic enhancements."}, "ungrounded"),
    ({**GOOD, "question": "What is the Riemann zeta function?"}, "contaminated"),
])
def test_each_pair_rule(pair, reason):
    f = PairFilter(PairRules(), Contamination([EVALUATION_QUESTIONS]).check)
    dropped = Counter()
    out = f.examples([pair], SOURCE, "2301.00001", "sys", dropped)
    if reason is None:
        assert not dropped and out[0]["messages"][1:] == [
            {"role": "user", "content": pair["question"]}, {"role": "assistant", "content": pair["answer"]}]
        assert out[0]["template"] == "qa_result" and not contexts.screen(out, lambda t: False)[2]
    else:
        assert out == [] and dropped == {reason: 1}


def test_duplicate_and_near_duplicate_questions():
    f = PairFilter(PairRules(), lambda t: False)
    near = {**GOOD, "question": "Why does the resistance of a superconductor vanish below $T_c$ exactly?"}
    dropped = Counter()
    assert len(f.examples([GOOD, near], SOURCE, "a", None, dropped)) == 1 and dropped == {"near_duplicate": 1}
    dropped = Counter()
    again = {**GOOD, "question": "why does the RESISTANCE of a superconductor vanish below $T_c$ ?"}
    assert f.examples([again], SOURCE, "b", None, dropped) == [] and dropped == {"duplicate_question": 1}


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"pairs": []}', '{"pairs": [{"question": 1}]}',
                                  '{"pairs": [{"question": "q"}]}', '{"pairs": "x"}'])
def test_unparseable_teacher_answers(text):
    assert parse(text) is None


def test_parse_keeps_kinds_and_trims():
    got = parse(json.dumps({"pairs": [{"kind": "concept", "question": " Q? ", "answer": " A. "},
                                      {"kind": "other", "question": "Q2", "answer": "A2"}]}))
    assert got == [{"kind": "concept", "question": "Q?", "answer": "A."},
                   {"kind": "result", "question": "Q2", "answer": "A2"}]


# -- reading comprehension --------------------------------------------------------------------

PASSAGE = ("We study superconductors. A material whose resistance vanishes below a critical temperature "
           "is called a superconductor. The critical temperature is defined as the point where the gap "
           "opens. The gap scales with the coupling. Therefore, strong coupling raises the critical "
           "temperature. We confirm this numerically.")


def test_reading_tasks_hold_their_answers_out_of_the_passage():
    passage, tasks = mine("Strong coupling superconductivity", PASSAGE)
    kinds = [k for k, _, _ in tasks]
    assert kinds == ["definition", "definition", "consequence", "title"]  # at most half held out
    assert passage.count(GAP) == 3 and len(passage) == 6
    shown = " ".join(passage)
    for kind, question, answer in tasks:
        assert not contexts.copies_prompt(shown + " " + question, answer), (kind, answer)
    assert tasks[0][1] == "What is meant by a superconductor?"
    assert tasks[2] == ("consequence", "Given that the gap scales with the coupling, what follows?",
                        "Strong coupling raises the critical temperature.")


def test_reading_comprehension_builds_on_the_sample(sample_dir, tmp_path):
    args = ["build", "--spec", "reading-comprehension", "--input", str(sample_dir / "arxiv-metadata-sample.jsonl"),
            "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")  # deterministic
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    c = m["counts"]
    assert c["kept"] > 200 and c["read"] == c["kept"] + sum(c["dropped"].values())
    examples = all_examples(tmp_path / "a")
    kinds = Counter(k for x in examples for k in x["template"].split(":")[1].split("+"))
    assert kinds["title"] > 100 and kinds["ending"] > 50
    for x in examples:
        roles = [mm["role"] for mm in x["messages"]]
        assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
        assert contexts.screen_messages(x["messages"], lambda t: False) is None


def test_list_specs_shows_the_task_contexts(capsys):
    assert cli.main(["list-specs"]) == 0
    out = capsys.readouterr().out
    assert "physics-qa" in out and "reading-comprehension" in out


# -- teacher options: one line, exit 2, before any work -----------------------------------------

def cli_err(capsys, *argv) -> str:
    rc = cli.main(["build", *map(str, argv), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_teacher_options_are_checked_before_any_work(capsys, sample_dir, tmp_path):
    meta = sample_dir / "arxiv-metadata-sample.jsonl"
    base = ["--spec", "physics-qa", "--input", meta, "--out", tmp_path / "o"]
    assert "needs a teacher" in cli_err(capsys, *base)
    assert "not found" in cli_err(capsys, *base, "--teacher-gguf", tmp_path / "none.gguf")
    assert "not both" in cli_err(capsys, *base, "--teacher-gguf", meta, "--teacher-url", "http://x")
    assert "not reachable" in cli_err(capsys, *base, "--teacher-url", "http://127.0.0.1:9/v1",
                                      "--teacher-cache", tmp_path / "c.sqlite")
    assert "--max-papers" in cli_err(capsys, *base, "--teacher-url", "http://x", "--max-papers", "0")
    assert not (tmp_path / "o").exists()


# -- the tiny model as the teacher (slow) -----------------------------------------------------------

def build_cmd(b, out: Path, cache: Path, *extra) -> list:
    return [sys.executable, "-m", "dataset_builders", "build", "--spec", b.spec, "--input", b.input,
            "--out", out, "--teacher-cache", cache, "--no-progress", *extra]


def cached(cache: Path) -> int:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


@pytest.mark.slow
def test_teacher_build_writes_filtered_chat_pairs(qa_build):
    m = json.loads((qa_build.out / "manifest.json").read_text())
    c, t = m["counts"], m["teacher"]
    assert t["papers_asked"] == cached(qa_build.cache) and t["papers_answered_from_cache"] == 0
    assert t["requests_sent"] == t["papers_asked"] and t["identity"].startswith("tiny-qwen2.5-f16@sha256:")
    assert t["endpoints"][0]["slots"] == 4 and t["prompt_version"]
    assert c["examples"]["validation"] > 0 and c["examples"]["train"] > 5
    for x in all_examples(qa_build.out):
        assert [mm["role"] for mm in x["messages"]] == ["system", "user", "assistant"]
        assert x["template"] in ("qa_result", "qa_concept")
        assert len(x["messages"][1]["content"]) <= 60 and len(x["messages"][2]["content"]) <= 120
    card = (qa_build.out / "README.md").read_text()
    assert "## Teacher" in card and t["identity"] in card


@pytest.mark.slow
def test_rerun_asks_nothing_and_writes_the_same(qa_build, tmp_path):
    cache = tmp_path / "c.sqlite"
    cache.write_bytes(qa_build.cache.read_bytes())
    run(build_cmd(qa_build, tmp_path / "again", cache, "--teacher-gguf", qa_build.gguf))
    t = json.loads((tmp_path / "again" / "manifest.json").read_text())["teacher"]
    assert t["papers_asked"] == 0 and t["requests_sent"] == 0 and t["papers_answered_from_cache"] > 10
    assert outputs(tmp_path / "again") == outputs(qa_build.out)


def llama_servers_on(model: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(model).encode() in cmdline.read_bytes() and b"llama-server" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_killed_build_resumes_without_asking_twice(qa_build, tmp_path):
    model = tmp_path / "teacher.gguf"
    model.write_bytes(qa_build.gguf.read_bytes())
    cache = tmp_path / "c.sqlite"
    cmd = build_cmd(qa_build, tmp_path / "o", cache, "--teacher-gguf", model, "--teacher-parallel", "4")
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (cache.exists() and cached(cache) >= 4):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    before = cached(cache)
    deadline = time.monotonic() + 30  # SIGKILL from the kernel when the build dies
    while llama_servers_on(model) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not llama_servers_on(model), "the teacher server died with the killed build"
    assert not (tmp_path / "o").exists() and 4 <= before
    run(build_cmd(qa_build, tmp_path / "o", cache, "--teacher-gguf", model))
    t = json.loads((tmp_path / "o" / "manifest.json").read_text())["teacher"]
    assert t["papers_answered_from_cache"] == before
    assert t["papers_asked"] == t["requests_sent"] == cached(cache) - before  # nothing asked twice
    # and a third run is all cache, identical output
    run(build_cmd(qa_build, tmp_path / "o2", cache, "--teacher-gguf", model))
    assert outputs(tmp_path / "o2") == outputs(tmp_path / "o")


@pytest.mark.slow
def test_teacher_that_dies_or_hangs_gives_counted_failures_and_a_resumable_build(qa_build, tmp_path):
    cache = tmp_path / "c.sqlite"
    results = {}
    for case in ("dies", "hangs"):
        server = LlamaServer(qa_build.gguf, parallel=2, log=tmp_path / f"{case}.log")
        server.start()
        try:
            def sabotage(server=server, case=case):
                while not (cache.exists() and cached(cache) >= results.get("base", 0) + 3):
                    time.sleep(0.1)
                os.killpg(server.proc.pid, signal.SIGKILL if case == "dies" else signal.SIGSTOP)

            th = threading.Thread(target=sabotage, daemon=True)
            th.start()
            # a stopped server is noticed only by the timeout; a killed one refuses at once, and a
            # longer timeout keeps a slow answer before the kill (a loaded machine) from timing out
            timeout = "3" if case == "hangs" else "60"
            p = run(build_cmd(qa_build, tmp_path / case, cache, "--teacher-url", server.base_url,
                              "--teacher-timeout", timeout, "--teacher-retries", "1"),
                    env={"TEACHER_API_KEY": server.api_key}, timeout=600)
            th.join(timeout=5)
        finally:
            if server.proc is not None:
                try:
                    os.killpg(server.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            server.stop()
        m = json.loads((tmp_path / case / "manifest.json").read_text())
        failed = m["teacher"]["papers_without_answer"]
        assert failed and "Traceback" not in p.stderr
        assert "run the same command again" in p.stderr
        assert sum(failed.values()) == sum(v for k, v in m["counts"]["dropped"].items() if k.startswith("teacher_"))
        if case == "dies":
            assert set(failed) <= {"teacher_unreachable", "teacher_unavailable"}
        else:
            assert "teacher_timeout" in failed
        results[case] = failed
        results["base"] = cached(cache)
    # a healthy teacher later: only what was never answered is asked
    with LlamaServer(qa_build.gguf, parallel=2) as server:
        before = cached(cache)
        run(build_cmd(qa_build, tmp_path / "healed", cache, "--teacher-url", server.base_url),
            env={"TEACHER_API_KEY": server.api_key})
    t = json.loads((tmp_path / "healed" / "manifest.json").read_text())["teacher"]
    assert t["papers_answered_from_cache"] == before and not t["papers_without_answer"]
    assert t["papers_asked"] == cached(cache) - before > 0


@pytest.mark.slow
def test_wrong_teacher_key_is_one_line(qa_build, tmp_path, capsys):
    with LlamaServer(qa_build.gguf, parallel=1) as server:
        os.environ["QP_TEST_KEY"] = "wrong"
        try:
            err = cli_err(capsys, "--spec", qa_build.spec, "--input", qa_build.input, "--out", tmp_path / "o",
                          "--teacher-url", server.base_url, "--teacher-key-env", "QP_TEST_KEY",
                          "--teacher-cache", tmp_path / "c.sqlite")
        finally:
            del os.environ["QP_TEST_KEY"]
    assert "refused the API key" in err and "wrong" not in err
