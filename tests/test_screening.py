"""What the data teaches: no example whose answer its prompt already holds, and nothing that
overlaps the evaluation questions, in every context and on every route of the builder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from dataset_builders import contexts
from dataset_builders import spec as spec_mod
from dataset_builders.contamination import Contamination, fold
from dataset_builders.pipeline import build
from qwenphysics.core.paths import EVALUATION_QUESTIONS
from tests.test_builders_metadata import all_out, rec, write_jsonl

ZETA_Q = "What is the Riemann zeta function?"
ZETA_REF = yaml.safe_load(EVALUATION_QUESTIONS.read_text())["questions"][0]["reference"]


def user_text(example: dict) -> str:
    return "\n".join(m["content"] for m in example["messages"] if m["role"] == "user")


def answer_text(example: dict) -> str:
    return "\n".join(m["content"] for m in example["messages"] if m["role"] == "assistant")


def copies(example: dict) -> bool:
    return contexts.copies_prompt(user_text(example), answer_text(example))


def routes(spec, rows, tmp_path: Path) -> dict[str, dict]:
    """The same records through the parallel and the serial snapshot routes and the generic
    (gzip, one process) route: manifests by route."""
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    out = {}
    for name, inputs, kw in (("parallel", [src], {"workers": 2, "block_bytes": 2000}),
                             ("serial", [src], {"workers": 1}),
                             ("gzip", [gz], {})):
        res = build(spec, [str(p) for p in inputs], tmp_path / name, **kw)
        out[name] = res.manifest
    files = {name: [(tmp_path / name / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test")]
             for name in out}
    assert files["parallel"] == files["serial"] == files["gzip"]
    counts = [{k: v for k, v in m["counts"].items()} for m in out.values()]
    assert counts[0] == counts[1] == counts[2]
    return out


def test_default_chat_context_never_answers_from_its_prompt(tmp_path):
    spec = spec_mod.load("abstracts-chat")
    rows = [rec(i) for i in range(40)]
    # titles the abstract repeats word for word: abstract -> title would be a copy
    rows += [rec(100 + i, title="gauge theory with $N_f$ flavours") for i in range(12)]
    # a one-sentence abstract: nothing is left to answer "how is it approached"
    rows += [rec(200 + i, abstract="We compute the one-loop correction to the beta function of a gauge "
                                   "theory with many flavours at strong coupling.") for i in range(12)]
    m = routes(spec, rows, tmp_path)["parallel"]
    out = all_out(tmp_path / "parallel")
    assert out and not [x for x in out if copies(x)]
    c = m["counts"]
    assert c["examples_dropped"].get("answer_in_prompt", 0) >= 1
    assert c["examples_dropped"].get("empty_answer", 0) >= 1
    assert c["kept"] == 64 and c["read"] == c["kept"] + sum(c["dropped"].values())  # each paper still has an example
    assert {x["template"] for x in out} >= {"approach_and_findings", "abstract_to_title"}
    finding = next(x for x in out if x["template"] == "approach_and_findings")
    assert finding["messages"][-1]["content"].startswith("The same bound holds")


def test_a_copying_template_is_dropped_and_counted(tmp_path):
    raw = yaml.safe_load(spec_mod.resolve("abstracts-chat").read_text())
    raw["templates"] = [{"id": "problem_addressed",
                         "user": "Here is the abstract of \"{title}\":\n\n{abstract}\n\nWhat problem does it address?",
                         "assistant": "{abstract_lead}"}]
    path = tmp_path / "copying.yml"
    path.write_text(yaml.safe_dump(raw))
    m = routes(spec_mod.load(str(path)), [rec(i) for i in range(20)], tmp_path)["serial"]
    assert m["counts"]["kept"] == 0 and m["counts"]["dropped"]["answer_in_prompt"] == 20
    assert all_out(tmp_path / "serial") == []


@pytest.mark.parametrize("spec_name", ["abstracts-chat", "abstracts-completion"])
def test_evaluation_questions_planted_in_papers_are_dropped_as_contaminated(tmp_path, spec_name):
    rows = [rec(i) for i in range(30)]
    planted = {
        "2301.00003": rec(3, abstract=rec(3)["abstract"] + f" {ZETA_Q.upper()} We answer it."),
        "2301.00007": rec(7, abstract=rec(7)["abstract"] + " Recall: " + " ".join(ZETA_REF.split()[:12])
                          + " and more."),
        "2301.00011": rec(11, title=ZETA_Q),  # a whole question, shorter than the n-gram
    }
    for pid, r in planted.items():
        rows[int(pid[-2:])] = r
    m = routes(spec_mod.load(spec_name), rows, tmp_path)["parallel"]
    assert m["counts"]["dropped"]["contaminated"] == 3
    ids = {x["id"] for x in all_out(tmp_path / "parallel")}
    assert not ids & set(planted) and len(ids) == 27
    assert m["decontamination"]["ngrams"] > 100


def test_contamination_matches_despite_case_punctuation_and_line_breaks():
    c = Contamination([EVALUATION_QUESTIONS])
    assert c.check("so,\nwhat   IS the Riemann zeta-function ? we ask")
    assert not c.check("The Riemann hypothesis concerns the zeros of a function.")
    assert not c.check("What is the")  # fewer words than any protected n-gram
    assert fold("A, b\n\tC-d") == b" a b c d "


def test_contamination_screens_every_context_kind():
    """The generic screen (full text, sections, Q&A, reading comprehension) drops what the
    metadata routes drop."""
    c = Contamination([EVALUATION_QUESTIONS])
    chat = {"messages": [{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": ZETA_Q}]}
    clean = {"messages": [{"role": "user", "content": "Why is the sky blue?"},
                          {"role": "assistant", "content": "Rayleigh scattering grows as $\\lambda^{-4}$."}]}
    copy = {"messages": [{"role": "user", "content": "Say: light is fast."},
                         {"role": "assistant", "content": "Light is fast."}]}
    assert contexts.screen([clean, chat], c.check)[1] == "contaminated"
    kept, drop, dropped = contexts.screen([clean, copy], c.check)
    assert kept == [clean] and drop is None and dropped == {"answer_in_prompt": 1}
    assert contexts.screen([copy], c.check)[1] == "answer_in_prompt"
    assert contexts.screen([{"text": "x " + ZETA_Q}], c.check)[1] == "contaminated"
    # a multi-turn answer copied from an earlier turn is a copy too
    multi = {"messages": [{"role": "user", "content": "Read: the Higgs mass is 125 GeV. Title?"},
                          {"role": "assistant", "content": "A heavy scalar"},
                          {"role": "user", "content": "Its mass?"},
                          {"role": "assistant", "content": "The Higgs mass is 125 GeV."}]}
    assert contexts.screen_messages(multi["messages"], c.check) == "answer_in_prompt"


def test_spec_can_add_question_files_or_turn_decontamination_off(tmp_path):
    extra = tmp_path / "mine.jsonl"
    extra.write_text(json.dumps({"question": "How heavy is the top quark in the standard model?"}) + "\n")
    raw = yaml.safe_load(spec_mod.resolve("abstracts-completion").read_text())
    rows = [rec(i) for i in range(10)]
    rows[4] = rec(4, abstract=rec(4)["abstract"] + " How heavy is the top quark in the standard model?")
    raw["decontaminate"] = ["evaluation", str(extra)]
    (tmp_path / "a.yml").write_text(yaml.safe_dump(raw))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    m = routes(spec_mod.load(str(tmp_path / "a.yml")), rows, tmp_path / "a")["serial"]
    assert m["counts"]["dropped"] == {"contaminated": 1}
    raw["decontaminate"] = False
    (tmp_path / "b.yml").write_text(yaml.safe_dump(raw))
    m = routes(spec_mod.load(str(tmp_path / "b.yml")), rows, tmp_path / "b")["serial"]
    assert m["counts"]["kept"] == 10 and m["decontamination"]["ngrams"] == 0


def test_flat_fast_path_equals_the_general_form():
    import random

    rng = random.Random(0)
    chars = "ab É\n\t\r\xa0\u2009ßx.  \x0b\x1f"
    for _ in range(20000):
        s = "".join(rng.choice(chars) for _ in range(rng.randint(0, 20)))
        assert contexts._flat(s) == " ".join(s.split()).casefold(), repr(s)


def test_block_search_finds_each_contaminated_text():
    c = Contamination([EVALUATION_QUESTIONS])
    texts = ["clean one", f"x {ZETA_Q} y", "clean two", "also clean", ZETA_REF]
    folded, starts = bytearray(), []
    for t in texts:
        starts.append(len(folded))
        folded += fold(t)
    assert c.check_folded(folded, starts) == {1, 4}
    assert c.check_folded(bytearray(), []) == set()
