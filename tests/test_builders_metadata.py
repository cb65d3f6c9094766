"""The metadata builder: filters with reasons, normalisation, dedup, splits, atomic and
deterministic output, bad input. Inputs are written here, line by line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dataset_builders import spec as spec_mod
from dataset_builders.normalize import authors_to_unicode, unwrap_abstract
from dataset_builders.pipeline import Source, build
from dataset_builders.split import base_id, split_of
from tests.fixtures_oai import arxiv_record, arxivraw_record, deleted_record, list_records_page

ROOT = Path(__file__).resolve().parent.parent
ABSTRACT = ("  We compute the one-loop correction to the $\\beta$-function of a\n"
            "gauge theory with $N_f$ flavours and find agreement with lattice data at\n"
            "strong coupling, which constrains the infrared fixed point. The same bound holds\n"
            "for every $N_f$ below the conformal window.\n")


def rec(i: int, **kw) -> dict:
    d = {
        "id": f"2301.{i:05d}", "submitter": "A. B.", "authors": "A. B\\\"ohm and C. D",
        "title": f"A study of gauge\n  theory number {i}", "comments": "10 pages", "journal-ref": None,
        "doi": None, "report-no": None, "categories": "hep-th", "license": None,
        "abstract": ABSTRACT.replace("one-loop", f"{i}-loop"),
        "versions": [{"version": "v1", "created": "Mon, 2 Jan 2023 10:00:00 GMT"}],
        "update_date": "2023-01-03", "authors_parsed": [["Böhm", "A.", ""]],
    }
    d.update(kw)
    return d


def write_jsonl(path: Path, rows: list, raw_lines: list[bytes] = ()) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
        for line in raw_lines:
            f.write(line + b"\n")
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def run_cli(*args, check_rc=None):
    p = subprocess.run([sys.executable, "-m", "dataset_builders", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True)
    if check_rc is not None:
        assert p.returncode == check_rc, p.stderr
    return p


def all_out(out: Path) -> list[dict]:
    return [x for s in ("train", "validation", "test") for x in lines(out / f"{s}.jsonl")]


@pytest.fixture
def chat():
    return spec_mod.load("abstracts-chat")


def test_counts_add_up_and_match_files(tmp_path, chat):
    rows = [rec(i) for i in range(60)] + [rec(100, categories="math.CO cs.DS"), rec(101, abstract="short")]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = build(chat, [str(src)], tmp_path / "out")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    c = m["counts"]
    assert c["read"] == 62 and c["kept"] == 60
    assert c["dropped"] == {"not_physics": 1, "abstract_too_short": 1}
    assert c["read"] == c["kept"] + sum(c["dropped"].values())
    for s in ("train", "validation", "test"):
        f = tmp_path / "out" / f"{s}.jsonl"
        assert len(f.read_text().splitlines()) == c["examples"][s]
        import hashlib
        assert hashlib.sha256(f.read_bytes()).hexdigest() == m["checksums"][f"{s}.jsonl"]
    assert sum(c["papers"].values()) == 60
    assert res.manifest == m
    assert "## What was dropped" in (tmp_path / "out" / "README.md").read_text()


def test_chat_lines_are_axolotl_ready_and_templates_rotate(tmp_path, chat):
    src = write_jsonl(tmp_path / "in.jsonl", [rec(i) for i in range(80)])
    build(chat, [str(src)], tmp_path / "out")
    out = all_out(tmp_path / "out")
    templates = {x["template"] for x in out}
    assert templates == {"title_to_abstract", "abstract_to_title", "abstract_to_category", "approach_and_findings"}
    for x in out:
        roles = [m["role"] for m in x["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in x["messages"])
        assert x["id"].startswith("2301.")
    cat = next(x for x in out if x["template"] == "abstract_to_category")
    assert cat["messages"][2]["content"] == "hep-th (High Energy Physics - Theory)"


def test_unwrap_abstract_single_spaced_shortcut_agrees_with_the_paragraph_rule():
    """Abstracts that are single-spaced once unwrapped skip the paragraph scan; on any mix of
    spaces, tabs, line breaks and indentation the result must be what the scan gives."""
    import random
    import re

    def by_the_rule(text):  # the documented rule, written plainly
        text = text.strip()
        if re.search(r"\n[ \t]", text) is None:
            return " ".join(text.split())
        paragraphs, prev = [[]], ""
        for line in text.split("\n"):
            if line[:1] in (" ", "\t") and prev.rstrip()[-1:] in ".!?:;" and paragraphs[-1]:
                paragraphs.append([])
            paragraphs[-1].append(line)
            prev = line
        return "\n\n".join(" ".join(" ".join(p).split()) for p in paragraphs if p)

    rng = random.Random(7)
    pieces = ["We", "study", "$T_c$.", "The", "gap", "closes!", "\\alpha", "(see", "below)", "x?", "A:"]
    gaps = [" ", " ", " ", "\n", "\n", "\n  ", "\n\t", "  ", "\t", "\r\n", " \n "]
    seen_shortcut = seen_scan = 0
    for _ in range(3000):
        words = rng.choices(pieces, k=rng.randint(1, 14))
        text = rng.choice(["", "  ", "\n"]) + "".join(w + rng.choice(gaps) for w in words)
        got = unwrap_abstract(text)
        assert got == by_the_rule(text), repr(text)
        single = "  " not in text.strip().replace("\n", " ") and "\t" not in text and "\r" not in text
        seen_shortcut += single
        seen_scan += not single
    assert seen_shortcut > 100 and seen_scan > 100  # both routes were exercised


def test_normalisation_unwraps_keeps_math_and_converts_accents(tmp_path):
    assert unwrap_abstract(ABSTRACT).startswith(
        "We compute the one-loop correction to the $\\beta$-function of a gauge")
    assert "\n" not in unwrap_abstract(ABSTRACT)
    para = "  First part ends here.\n  Second paragraph starts\nand goes on.\n"
    assert unwrap_abstract(para) == "First part ends here.\n\nSecond paragraph starts and goes on."
    assert authors_to_unicode("C. Bal\\'azs, Mikkel {\\O}bro, R. \\v{S}r\\'amek") == "C. Balázs, Mikkel Øbro, R. Šrámek"
    # a spec can use {authors}: names come out in Unicode
    spec_path = tmp_path / "authors.yml"
    spec_path.write_text("name: authors\nformat: completion\ntext: \"{title} by {authors}\\n\\n{abstract}\"\n")
    src = write_jsonl(tmp_path / "in.jsonl", [rec(1)])
    build(spec_mod.load(str(spec_path)), [str(src)], tmp_path / "out")
    (x,) = all_out(tmp_path / "out")
    assert x["text"].startswith("A study of gauge theory number 1 by A. Böhm and C. D\n\n")
    assert "$N_f$" in x["text"]


@pytest.mark.parametrize("filters,row,reason", [
    ({"primary_only": True}, {"categories": "math.CO hep-th"}, "not_physics_primary"),
    ({}, {"categories": "math.MP"}, None),  # alias of math-ph
    ({}, {"categories": "chao-dyn"}, None),  # legacy archive
    ({}, {"categories": "astro-ph"}, None),
    ({"categories": ["astro-ph"]}, {"categories": "astro-ph.CO"}, None),  # archive matches subject class
    ({"include_archives": ["astro-ph"]}, {"categories": "hep-th"}, "archive_not_included"),
    ({"exclude_archives": ["hep-th"]}, {"categories": "hep-th"}, "archive_excluded"),
    ({"date_from": "2023-02-01"}, {}, "before_date_from"),
    ({"date_to": "2022-12-31"}, {}, "after_date_to"),
    ({"date_from": "2023-01-01", "date_to": "2023-01"}, {}, None),
    ({"licenses": "redistributable"}, {"license": None}, "license_not_allowed"),
    ({"licenses": "redistributable"}, {"license": "http://creativecommons.org/licenses/by/4.0/"}, None),
    ({"licenses": "redistributable"}, {"license": "http://creativecommons.org/licenses/by-nc-nd/4.0/"},
     "license_not_allowed"),
    ({}, {"comments": "This paper has been withdrawn by the author"}, "withdrawn"),
    ({"min_abstract_chars": 500}, {}, "abstract_too_short"),
    ({"max_abstract_chars": 50}, {}, "abstract_too_long"),
    ({"min_title_chars": 100}, {}, "title_too_short"),
])
def test_filters_count_each_reason(tmp_path, filters, row, reason):
    spec_path = tmp_path / "s.yml"
    spec_path.write_text(json.dumps({"name": "s", "format": "completion", "filters": filters}))
    src = write_jsonl(tmp_path / "in.jsonl", [rec(1, **row)])
    res = build(spec_mod.load(str(spec_path)), [str(src)], tmp_path / "out")
    c = res.manifest["counts"]
    if reason is None:
        assert c["kept"] == 1, c
    else:
        assert c["kept"] == 0 and c["dropped"] == {reason: 1}


def test_dedup_across_versions_sources_and_content(tmp_path):
    short_ok = tmp_path / "s.yml"  # the OAI fixture abstracts are short
    short_ok.write_text(json.dumps({"name": "s", "format": "completion", "filters": {"min_abstract_chars": 10}}))
    kaggle = write_jsonl(tmp_path / "k.jsonl", [rec(1), rec(2), rec(3, id="2301.00001v2"),  # same base id
                                                rec(4, title="A study of gauge theory number 2",
                                                    abstract=rec(2)["abstract"])])  # same content
    pages = tmp_path / "oai"
    pages.mkdir()
    (pages / "page-00001.xml").write_bytes(list_records_page(
        [arxiv_record("2301.00002"), arxivraw_record("2401.00009"), deleted_record("2401.00010")], None, 0, 3))
    res = build(spec_mod.load(str(short_ok)), [str(kaggle), str(pages)], tmp_path / "out")
    c = res.manifest["counts"]
    assert c["dropped"]["duplicate_id"] == 2  # 2301.00001v2 and the OAI copy of 2301.00002
    assert c["dropped"]["duplicate_content"] == 1
    assert c["dropped"]["deleted"] == 1
    ids = sorted(x["id"] for x in all_out(tmp_path / "out"))
    assert ids == ["2301.00001", "2301.00002", "2401.00009"]


def test_oai_formats_parse(tmp_path):
    from dataset_builders.readers import iter_input
    pages = tmp_path / "p"
    pages.mkdir()
    (pages / "page-00001.xml").write_bytes(list_records_page(
        [arxiv_record("2401.00001"), arxivraw_record("2401.00002v3")], None, 0, 2))
    a, b = list(iter_input(str(pages)))
    assert a.authors == "Emmy Noether, Paul Dirac" and a.categories == ["hep-th", "gr-qc"]
    assert a.created == "2024-01-02" and b.created == "2024-01-02" and b.id == "2401.00002"
    assert a.license == b.license == "http://creativecommons.org/licenses/by/4.0/"
    assert "&" in a.abstract


def test_split_is_by_base_id_and_shared_across_contexts(tmp_path, chat):
    assert base_id("hep-th/9901001v3") == "hep-th/9901001" and base_id("arXiv:2301.00001v2") == "2301.00001"
    assert split_of("2301.00001v1") == split_of("2301.00001v7")
    rows = [rec(i) for i in range(400)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    build(chat, [str(src)], tmp_path / "chat")
    build(spec_mod.load("abstracts-completion"), [str(src)], tmp_path / "comp")
    for s in ("train", "validation", "test"):
        a = {x["id"] for x in lines(tmp_path / "chat" / f"{s}.jsonl")}
        b = {x["id"] for x in lines(tmp_path / "comp" / f"{s}.jsonl")}
        assert a == b and all(split_of(i) == s for i in a)
    assert 0 < len(lines(tmp_path / "chat" / "test.jsonl")) < 30


def test_byte_identical_rebuild(tmp_path, chat):
    src = write_jsonl(tmp_path / "in.jsonl", [rec(i) for i in range(50)])
    build(chat, [str(src)], tmp_path / "a")
    build(chat, [str(src)], tmp_path / "b")
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, chat, monkeypatch, workers):
    import dataset_builders.contexts as ctx

    src = write_jsonl(tmp_path / "in.jsonl", [rec(i) for i in range(50)])
    build(chat, [str(src)], tmp_path / "out")  # a previous good build
    before = (tmp_path / "out" / "train.jsonl").read_bytes()
    calls = {"n": 0}
    real = ctx.line_renderer

    def renderer(spec):
        inner = real(spec)

        def boom(*a, **k):
            calls["n"] += 1
            if calls["n"] > 10:  # one process: Ctrl-C mid-build; several: a worker fails
                raise KeyboardInterrupt if workers == 1 else MemoryError
            return inner(*a, **k)

        return boom

    monkeypatch.setattr("dataset_builders.snapshot.contexts.line_renderer", renderer)
    with pytest.raises(KeyboardInterrupt if workers == 1 else MemoryError):
        build(chat, [str(write_jsonl(tmp_path / "in2.jsonl", [rec(i) for i in range(60)]))], tmp_path / "out",
              workers=workers, block_bytes=2048)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == before  # old output untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial left


def test_bad_records_are_counted_not_fatal(tmp_path):
    good = rec(1)
    src = write_jsonl(tmp_path / "in.jsonl", [good, {"id": "2301.00002", "title": 5, "abstract": "x",
                                                      "categories": "hep-th"},
                                              {"id": "2301.00003", "categories": "hep-th", "abstract": "y"},
                                              [1, 2, 3]],
                      raw_lines=[b'{"id": "2301.00004", "title": ', b'\xff\xfe{"id": 1}', b""])
    p = run_cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "out", "--no-progress",
                check_rc=0)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"]["dropped"] == {"invalid_utf8": 1, "malformed_json": 1, "missing_field:title": 1,
                                      "not_an_object": 1, "wrong_type:title": 1}
    assert m["counts"]["kept"] == 1
    assert "Traceback" not in p.stderr and "dropped 1 (wrong_type:title)" in p.stderr


def test_truncated_gz_and_empty_file(tmp_path):
    data = gzip.compress(b"".join(orjson.dumps(rec(i)) + b"\n" for i in range(200)))
    trunc = tmp_path / "trunc.jsonl.gz"
    trunc.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    p = run_cli("build", "--spec", "abstracts-completion", "--input", trunc, "--input", empty,
                "--out", tmp_path / "out", "--no-progress", check_rc=0)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    issues = {(Path(i["input"]).name, i["issue"]) for i in m["input_issues"]}
    assert issues == {("trunc.jsonl.gz", "truncated_input"), ("empty.jsonl", "empty_input")}
    assert 0 < m["counts"]["kept"] < 200
    assert "Traceback" not in p.stderr


def test_zstd_input(tmp_path, chat):
    import zstandard

    raw = b"".join(orjson.dumps(rec(i)) + b"\n" for i in range(20))
    f = tmp_path / "in.jsonl.zst"
    f.write_bytes(zstandard.ZstdCompressor().compress(raw))
    assert build(chat, [str(f)], tmp_path / "out").manifest["counts"]["kept"] == 20


@pytest.mark.parametrize("args,needle", [
    (["--spec", "abstracts-chat", "--input", "/nonexistent.jsonl"], "input not found"),
    (["--spec", "no-such-spec", "--input", "x.jsonl"], "unknown spec 'no-such-spec'"),
    (["--spec", "abstracts-chat", "--input", "NOTGZ"], "cannot decompress"),
    (["--spec", "abstracts-chat", "--input", "data.bz2"], "unknown input format"),
    (["--spec", "abstracts-chat"], "no input given"),
])
def test_unusable_invocations_exit_2_with_one_line(tmp_path, args, needle):
    (tmp_path / "NOTGZ.jsonl.gz").write_bytes(b"this is not gzip\n")
    (tmp_path / "data.bz2").write_bytes(b"BZh9")
    args = [str(tmp_path / "NOTGZ.jsonl.gz") if a == "NOTGZ" else str(tmp_path / a) if a == "data.bz2" else a
            for a in args]
    p = run_cli("build", *args, "--out", tmp_path / "out", "--no-progress")
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_bad_spec_files_exit_2(tmp_path):
    cases = {
        "typo.yml": "name: t\nformat: chat\nfliters: {}\ntemplates: [{id: a, user: u, assistant: a}]\n",
        "placeholder.yml": "name: t\nformat: chat\ntemplates: [{id: a, user: '{titel}', assistant: a}]\n",
        "format.yml": "name: t\nformat: parquet\n",
        "yaml.yml": "name: [unclosed\n",
    }
    src = write_jsonl(tmp_path / "in.jsonl", [rec(1)])
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        p = run_cli("build", "--spec", tmp_path / name, "--input", src, "--out", tmp_path / "o", "--no-progress")
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, (name, p.stderr)


def test_hf_dataset_id_streams_through_datasets(tmp_path, chat):
    repo = tmp_path / "local-arxiv-dataset"
    (repo / "data").mkdir(parents=True)
    write_jsonl(repo / "data" / "train.jsonl", [rec(i) for i in range(12)])
    res = build(chat, [f"hf:{repo}@train"], tmp_path / "out")
    assert res.manifest["counts"]["kept"] == 12
    p = run_cli("build", "--spec", "abstracts-chat", "--input", "hf:/no/such/dataset", "--out", tmp_path / "o2",
                "--no-progress")
    assert p.returncode == 2 and "cannot open Hugging Face dataset" in p.stderr


def test_limit_and_cli_help(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [rec(i) for i in range(30)])
    run_cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "o", "--limit", "7",
            "--no-progress", check_rc=0)
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["read"] == 7
    h = run_cli("build", "--help", check_rc=0)
    assert "--limit" in h.stdout and "hf:<dataset id>" in h.stdout and "--workers" in h.stdout
    assert "abstracts-chat" in run_cli("list-specs", check_rc=0).stdout


def test_project_sample_builds(tmp_path, chat):
    from dataset_builders.sample import write_sample

    paths = write_sample(tmp_path / "sample")
    res = build(chat, [str(paths["metadata"])], tmp_path / "out")
    c = res.manifest["counts"]
    assert c["read"] == 301 and c["kept"] > 200
    assert {"not_physics", "withdrawn", "duplicate_content"} <= set(c["dropped"])


# ---- the block route (snapshot.py) against the record-by-record reference route ----------

def _messy_snapshot(path: Path) -> Path:
    """Every kind of line the block route must treat exactly like the reference route."""
    rows = []
    for i in range(240):
        kw = {}
        if i % 7 == 0:
            kw["categories"] = "math.CO cs.DS"  # not physics: dropped by the byte prefilter
        if i % 11 == 0:
            kw["categories"] = "cs.LG physics.data-an"  # physics only as a cross-list
        if i % 13 == 0:
            kw["abstract"] = "too short"
        if i % 17 == 0:
            kw["comments"] = "This paper has been withdrawn by the author"
        if i % 19 == 0:
            kw["versions"] = [{"version": "v1", "created": "Tue, 3 Mar 1998 10:00:00 GMT"}]
        if i % 23 == 0:
            kw["license"] = "http://creativecommons.org/licenses/by/4.0/"
        if i % 5 == 0:
            kw["abstract"] = ("  First paragraph ends here. It has two sentences.\n  A second paragraph "
                              f"on $\\alpha_s$ number {i}, long enough to pass the length filter easily.")
        rows.append(rec(i, **kw))
    rows += [rec(3, id="2301.00003v2"),  # a later version of an earlier paper: duplicate id
             rec(900, abstract=rows[1]["abstract"], title=rows[1]["title"].upper()),  # duplicate content
             rec(901, abstract=rows[1]["abstract"], title=rows[1]["title"], id="2301.00001v3"),  # both
             rec(902, categories="astro-ph.GA hep-ph", authors="{\\O}bro, M.")]
    with open(path, "wb") as f:
        for k, r in enumerate(rows):
            if k % 29 == 0:
                f.write(json.dumps(r, indent=None).encode() + b"\n")  # `"categories": "..."` (spaced)
            else:
                f.write(orjson.dumps(r) + b"\n")
            if k % 31 == 0:
                f.write(b"\n   \n")  # blank lines are not records
            if k % 37 == 0:
                f.write(b'{"id": "2301.99999", "title": \n')  # malformed
            if k % 41 == 0:
                f.write(b'\xff{"categories":"hep-th"}\n')  # not UTF-8
        f.write(orjson.dumps(rec(950)))  # last line without a newline
    return path


def _reference_build(spec, inputs, out):
    """The record-by-record route: reader -> Paper -> filters -> dedup -> dict examples."""
    from collections import Counter

    from dataset_builders.filters import category_check
    from dataset_builders.pipeline import iter_papers

    counts, issues = Counter(), []
    papers = iter_papers(inputs, None, counts, issues, prefilter=category_check(spec.filters))
    return build(spec, inputs, out, source=Source(papers, counts, issues))


def _spec_variant(tmp_path, name, **changes):
    import yaml

    raw = yaml.safe_load((ROOT / "dataset_builders" / "specs" / f"{name}.yml").read_text())
    raw.update(changes)
    p = tmp_path / f"{name}-variant.yml"
    p.write_text(yaml.safe_dump(raw))
    return spec_mod.load(str(p))


@pytest.mark.parametrize("variant", ["abstracts-chat", "two-templates-dates-licences", "abstracts-completion"])
def test_block_route_equals_reference_for_any_workers_and_block_size(tmp_path, variant):
    if variant == "two-templates-dates-licences":
        spec = _spec_variant(tmp_path, "abstracts-chat", templates_per_paper=2, filters={
            "categories": "physics", "primary_only": False, "date_from": "2000-01-01",
            "exclude_archives": ["astro-ph"]},
            templates=[{"id": "year", "user": "When ({year}) and by whom ({authors})?", "assistant": "{title}"},
                       {"id": "cats", "user": "{categories} / {license}", "assistant": "{abstract_lead}"},
                       {"id": "abs", "user": "{title}", "assistant": "{abstract}"}])
    else:
        spec = spec_mod.load(variant)
    src = _messy_snapshot(tmp_path / "snap.jsonl")
    ref = _reference_build(spec, [str(src)], tmp_path / "ref")
    assert ref.manifest["counts"]["kept"] > 100
    dropped = ref.manifest["counts"]["dropped"]
    for reason in ("duplicate_id", "duplicate_content", "malformed_json", "invalid_utf8"):
        assert dropped.get(reason), (reason, dropped)
    want = {f: (tmp_path / "ref" / f).read_bytes() for f in ("train.jsonl", "validation.jsonl", "test.jsonl")}
    for workers, block in [(1, None), (1, 700), (2, 700), (2, 5000), (2, 1 << 20)]:
        out = tmp_path / f"w{workers}-b{block}"
        res = build(spec, [str(src)], out, workers=workers, block_bytes=block or None)
        got = {f: (out / f).read_bytes() for f in want}
        assert got == want, (workers, block)
        assert res.manifest["counts"] == ref.manifest["counts"], (workers, block)
        assert res.manifest["checksums"] == ref.manifest["checksums"]
        assert res.manifest["tokens"] == ref.manifest["tokens"]


def test_line_renderer_bytes_equal_dumped_examples():
    from dataset_builders import contexts
    from dataset_builders.readers.kaggle import paper_from_dict

    for name in ("abstracts-chat", "abstracts-completion"):
        spec = spec_mod.load(name)
        render = contexts.line_renderer(spec)
        for i in range(40):
            p = paper_from_dict(rec(i, title=f"Über \"quoted\" \\emph{{x}} {i}", authors="G\\\"ahler"), "t")
            pieces, n, drop, skipped = render(p, i * 37)
            examples, drop2, skipped2 = contexts.render_screened(spec, p, i * 37, lambda t: False)
            want = [orjson.dumps(x) + b"\n" for x in examples]
            assert b"".join(pieces) == b"".join(want) and n == len(want) and drop == drop2
            assert sorted(skipped) == sorted(skipped2.elements())


def test_parallel_run_is_split_into_ranges_and_merged_in_order(tmp_path, chat):
    from dataset_builders import snapshot

    src = _messy_snapshot(tmp_path / "snap.jsonl")
    ranges = snapshot.plan([str(src)], 1000)
    assert len(ranges) > 50
    assert ranges[0][1] == 0 and ranges[-1][2] == src.stat().st_size
    data = src.read_bytes()
    for (_, _, b), (_, c, _) in zip(ranges, ranges[1:]):
        assert b == c and data[b - 1:b] == b"\n"  # contiguous, each ends at a line break
    assert snapshot.can_parallel([str(src)], None, 2, 1000)
    assert not snapshot.can_parallel([str(src)], 10, 2, 1000)  # --limit: one process
    gz = tmp_path / "snap.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    assert not snapshot.can_parallel([str(gz)], None, 2, 1000)  # compressed: one process
    a = build(chat, [str(gz)], tmp_path / "gz", workers=2, block_bytes=1000)
    b = build(chat, [str(src)], tmp_path / "plain", workers=2, block_bytes=1000)
    assert (tmp_path / "gz" / "train.jsonl").read_bytes() == (tmp_path / "plain" / "train.jsonl").read_bytes()
    assert a.manifest["counts"] == b.manifest["counts"]


def test_limit_counts_records_across_blocks(tmp_path, chat):
    src = _messy_snapshot(tmp_path / "snap.jsonl")
    for limit in (1, 57, 200):
        res = build(chat, [str(src)], tmp_path / f"l{limit}", limit=limit, block_bytes=900)
        assert res.manifest["counts"]["read"] == limit
    two = build(chat, [str(src), str(src)], tmp_path / "two", limit=300, block_bytes=900)
    assert two.manifest["counts"]["read"] == 300


def test_cli_workers_option(tmp_path):
    src = _messy_snapshot(tmp_path / "snap.jsonl")
    run_cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "a", "--no-progress",
            "--workers", "1", check_rc=0)
    run_cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "b", "--no-progress",
            "--workers", "2", check_rc=0)
    for f in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    p = run_cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "c", "--workers", "0",
                check_rc=2)
    assert "--workers must be at least 1" in p.stderr and "Traceback" not in p.stderr


def test_sorted_keys_replay_first_occurrence_like_a_set():
    import numpy as np

    from dataset_builders.snapshot import SortedKeys, first_new

    rng = np.random.default_rng(0)
    keys, seen = SortedKeys(), set()
    for _ in range(120):
        block = rng.integers(0, 40_000, rng.integers(0, 700))
        mask = first_new(block, keys)
        want, here = [], set()
        for v in block.tolist():
            want.append(v not in seen and v not in here)
            here.add(v)
        assert mask.tolist() == want
        keys.add(block[mask])
        seen.update(block[mask].tolist())
    assert len(keys) == len(seen) and len(keys.runs) <= 2 * np.log2(len(seen))


def test_token_counter_counts_like_the_built_qwen_tokenizer(tokenizer_built):
    """The builders' tiktoken counter against the `tokenizers` build of the same vocabulary, on
    text that stresses every step: added tokens inside text, NFC (combining marks, a combining
    mark right after `>`), the pre-tokenizer's contractions, digits, whitespace runs and
    exotic spaces, CJK, emoji, TeX."""
    import random

    from qwenphysics.qwen_tokenizer import ADDED_TOKENS, token_counter

    hf = tokenizer_built
    count = token_counter()
    assert count is not None
    rng = random.Random(3)
    alphabet = list("aZ09 .,;'\"\n\t\r  $\\{}_^é漢字🙂\u0301\u0338\u00a0\u2003\u3000\u0085><|") + \
        [t for t, _ in ADDED_TOKENS] + ["'s", "'LL", " \n\n ", "ǅ", "ﬁ", "Å", "A\u030a", "12345", "<|im_end", "|>"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(4000)]
    texts += ["<|im_start|>user\nWhat is $\\mathcal{O}(N^2)$?<|im_end|>\n<|im_start|>assistant\n"
              "Schr\u00f6dinger's equation, i\\hbar\\partial_t\\psi = H\\psi.<|im_end|>\n",
              "<|im_end|>\u0338 and >\u0338", "   leading and trailing   ", ""]
    want = [len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)]
    got = count(texts)
    assert sum(want) > 50_000
    diff = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert not diff, diff[:5]


def test_token_sample_counted_early_equals_counted_at_the_end(tmp_path, chat):
    from dataset_builders.output import TOKEN_SAMPLE, token_stats

    src = write_jsonl(tmp_path / "in.jsonl", [rec(i) for i in range(TOKEN_SAMPLE + 150)])
    res = build(chat, [str(src)], tmp_path / "out", block_bytes=4096)
    if res.manifest["tokens"] is None:
        pytest.skip("the Qwen2.5 tokenizer is not built (make setup)")
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert res.manifest["tokens"]["train"]["examples_sampled"] == TOKEN_SAMPLE  # counted while building
    samples = {"train": train[:TOKEN_SAMPLE], "validation": [], "test": []}
    want = token_stats(samples, {"train": len(train)})["train"]
    assert res.manifest["tokens"]["train"] == want


def test_line_renderer_fills_every_placeholder_like_render(tmp_path):
    from dataset_builders import contexts
    from dataset_builders.readers.kaggle import paper_from_dict

    names = [n for n in contexts.PLACEHOLDERS if n not in ("id", "title", "abstract")]
    templates = [{"id": f"t_{n}", "user": f"{{title}} / {{{n}}}", "assistant": f"{{{n}}} and {{abstract}}"}
                 for n in names]
    templates.append({"id": "t_extra", "user": "{title} {venue}", "assistant": "{abstract_lead}"})
    path = tmp_path / "every.yml"
    path.write_text(yaml_dump({"name": "every", "format": "chat", "templates": templates,
                               "templates_per_paper": 3, "options": {"extra_placeholders": ["venue"]}}))
    spec = spec_mod.load(str(path))
    render = contexts.line_renderer(spec)
    for i in range(30):
        p = paper_from_dict(rec(i, categories="physics.optics hep-th", license="http://x/", title=f"T{i}",
                                authors="J. G\\\"ahler and {\\O}. Bro"), "t")
        p.extra["venue"] = f"Venue {i}"
        pieces, n, drop, skipped = render(p, i * 7)
        want = [orjson.dumps(x) + b"\n" for x in contexts.render(spec, p, i * 7)]
        assert b"".join(pieces) == b"".join(want) and n == 3 and drop is None and not skipped
    assert b"Optics" in b"".join(render(p, names.index("primary_category_name"))[0])


def yaml_dump(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


# Lines in the snapshot's shape take msgspec's typed decode; everything else the general
# orjson path. Whatever orjson accepts must come out the same either way.
_SHAPES = [
    rec(1),
    rec(2, versions=[]),
    rec(3, versions=None),
    rec(4, versions=[{"version": "v1", "created": 5}]),
    rec(5, versions=[{"version": "v1"}]),
    rec(6, versions=["v1"]),
    rec(7, versions={"v1": 1}),
    rec(8, versions=[{"created": "Tue, 3 Jan 2023 10:00:00 GMT"}, 7]),
    rec(9, versions=[{"created": "not a date"}]),
    rec(10, license=3),
    rec(11, license="http://creativecommons.org/licenses/by/4.0/"),
    rec(12, comments=["x"]),
    rec(13, comments="This paper has been withdrawn by the author"),
    rec(14, authors=None),
    rec(15, authors=["A"]),
    rec(16, doi=1, **{"journal-ref": ["J"]}),
    rec(17, doi="10.1/x", **{"journal-ref": "Phys. Rev. D 1 (2023)"}),
    rec(18, title=None),
    rec(19, abstract=5),
    rec(20, categories=""),
    rec(21, categories=["hep-th"]),
    rec(22, id="hep-th/9901001v3"),
    {k: v for k, v in rec(23).items() if k != "title"},
    {k: v for k, v in rec(24).items() if k not in ("license", "comments", "doi", "journal-ref", "versions")},
]
_RAW_SHAPES = [
    b'{"id":"2301.00030","title":"First title","abstract":"' + b"x" * 120 + b'","categories":"hep-th",'
    b'"title":"Second title"}',  # a repeated key: the last one wins
    b'["2301.00031"]', b'"text"', b"17", b"null",
    b'{"id":"2301.00032","title":"T\\u00fcbingen","abstract":"' + b"y" * 120 + b'","categories":"hep-th"}\r',
]


@pytest.mark.parametrize("want_date", [True, False])
def test_snapshot_lines_parse_the_same_through_either_decoder(want_date):
    from dataset_builders.readers import kaggle

    lines = [orjson.dumps(d) for d in _SHAPES] + _RAW_SHAPES
    fast = 0
    for line in lines:
        got = kaggle.parse_line(line, "s.jsonl", None, want_date)
        want = kaggle.paper_from_dict(orjson.loads(line), "s.jsonl", want_date)
        assert got == want, line
        try:
            kaggle._decode_line(line)
            fast += 1
        except kaggle._NOT_IN_SHAPE:
            pass
    assert 8 <= fast < len(lines)  # both paths were exercised


def test_stray_bytes_in_unused_fields_do_not_drop_a_paper():
    from dataset_builders.readers import kaggle

    line = orjson.dumps(rec(40, submitter="SUBMITTER")).replace(b"SUBMITTER", b"S\xffmitter")
    p = kaggle.parse_line(line, "s.jsonl")
    assert p.__class__.__name__ == "Paper" and p.id == "2301.00040"
    bad_title = orjson.dumps(rec(41, title="TITLE of it")).replace(b"TITLE", b"T\xffTLE")
    assert kaggle.parse_line(bad_title, "s.jsonl").reason == "invalid_utf8"


@pytest.mark.parametrize("route", ["serial", "blocks"])
def test_spaced_separators_take_the_byte_prefilter_too(tmp_path, route):
    """A snapshot re-serialised with `", "` / `": "` separators (json.dumps' default) is judged by
    the raw-byte category prefilter like the compact one: a non-physics line is dropped as
    `not_physics` before its JSON is parsed (so even a broken one), and the outputs of the two
    forms are byte-identical."""
    from dataset_builders.readers.kaggle import raw_categories

    assert raw_categories(b'{"id": "1", "categories": "hep-th gr-qc", "title": "x"}') == b"hep-th gr-qc"
    assert raw_categories(b'{"id":"1","categories":"hep-th gr-qc","title":"x"}') == b"hep-th gr-qc"
    rows = [rec(i, categories="math.CO" if i % 4 == 0 else "hep-th") for i in range(60)]
    outs = {}
    for form, dump in (("compact", orjson.dumps), ("spaced", lambda r: json.dumps(r).encode())):
        path = tmp_path / f"{form}.jsonl"
        with open(path, "wb") as f:
            for r in rows:
                f.write(dump(r) + b"\n")
            # not physics and cut short: only the prefilter can tell it is not physics
            f.write(dump({"id": "2301.99998", "categories": "cs.LG"})[:-1] + b', "title": \n')
        workers = ["--workers", "1"] if route == "serial" else ["--workers", "2"]
        p = subprocess.run([sys.executable, "-m", "dataset_builders", "build", "--spec", "abstracts-chat", "--input",
                            str(path), "--out", str(tmp_path / form), "--no-progress", "--no-input-hash", *workers],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        manifest = json.loads((tmp_path / form / "manifest.json").read_text())
        assert manifest["counts"]["dropped"].get("not_physics") == 16, (form, manifest["counts"]["dropped"])
        assert "malformed_json" not in manifest["counts"]["dropped"]
        outs[form] = [(tmp_path / form / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test")]
    assert outs["compact"] == outs["spaced"]
