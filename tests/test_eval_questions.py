"""The shipped question set: size, coverage, the seed questions, and honest scorers."""

import pytest

from qwenphysics.evaluation import questions

REQUIRED = {"mechanics", "electromagnetism", "thermodynamics", "quantum", "relativity",
            "astrophysics", "condensed_matter"}
QSET = questions.load()


def test_size_and_categories():
    assert len(QSET.questions) >= 45
    assert REQUIRED <= set(QSET.categories)
    for cat in REQUIRED:
        assert sum(q.category == cat for q in QSET.questions) >= 5, cat
    ids = [q.id for q in QSET.questions]
    assert len(ids) == len(set(ids))


def test_seed_questions_present():
    by_text = {q.question: q for q in QSET.questions}
    assert "What is the Riemann zeta function?" in by_text
    assert "What is the expression for the Riemann zeta function?" in by_text
    assert "When was the Michelson–Morley experiment carried out?" in by_text
    assert any(t.startswith("What term is used to describe black holes") for t in by_text)
    odd = [q for q in QSET.questions if q.id.startswith("seed-odd-integral")]
    assert {q.language for q in odd} == {"en", "es"}
    assert "odd function over a symmetric interval" in next(q for q in odd if q.language == "en").question
    assert "función impar" in next(q for q in odd if q.language == "es").question
    assert sum(q.seed for q in QSET.questions) == 6
    mm = by_text["When was the Michelson–Morley experiment carried out?"]
    assert mm.score("1887") and not mm.score("1905")
    for q in odd:
        assert q.score(r"$\int_{-a}^{a} f(x)\,dx = 0$")
        assert q.score("It is zero.") and q.score("Es cero.")
        assert not q.score(r"$\int_{-a}^{a} f(x)\,dx = 0.5$")
        assert not q.score("It equals 2.")


@pytest.mark.parametrize("q", QSET.questions, ids=lambda q: q.id)
def test_scorer_accepts_reference_and_rejects_wrong_answers(q):
    assert q.score(q.reference), f"{q.id}: scorer rejects its own reference answer"
    assert q.wrong, f"{q.id}: give at least one wrong answer the scorer must reject"
    for w in q.wrong:
        assert not q.score(w), f"{q.id}: scorer accepts the wrong answer {w!r}"
    assert not q.score(""), f"{q.id}: empty answer accepted"


def test_select_filters_and_limits():
    mech = QSET.select(["mechanics"])
    assert mech and all(q.category == "mechanics" for q in mech)
    assert len(QSET.select(None, 3)) == 3
    assert len(QSET.select(["quantum", "relativity"], 2)) == 2


@pytest.mark.parametrize("body,fragment", [
    ("questions: []\n", "non-empty 'questions'"),
    ("questions: [{id: Bad Id}]\n", "slug"),
    ("questions:\n- {id: a, category: cooking, question: q, reference: r, scorer: {type: keywords, any: [x]}}\n",
     "category"),
    ("questions:\n- {id: a, category: quantum, question: q, reference: r, scorer: {type: nope}}\n",
     "unknown scorer type"),
    ("questions:\n- {id: a, category: quantum, question: q, reference: r, scorer: {type: keywords, any: [x]}}\n"
     "- {id: a, category: quantum, question: q, reference: r, scorer: {type: keywords, any: [x]}}\n",
     "duplicate"),
    ("questions: [\n", "not valid YAML"),
])
def test_malformed_question_files(tmp_path, body, fragment):
    path = tmp_path / "q.yml"
    path.write_text(body)
    with pytest.raises(questions.QuestionSetError, match=fragment):
        questions.load(path)
