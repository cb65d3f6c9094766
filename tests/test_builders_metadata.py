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
from dataset_builders.pipeline import build
from dataset_builders.split import base_id, split_of
from tests.fixtures_oai import arxiv_record, arxivraw_record, deleted_record, list_records_page

ROOT = Path(__file__).resolve().parent.parent
ABSTRACT = ("  We compute the one-loop correction to the $\\beta$-function of a\n"
            "gauge theory with $N_f$ flavours and find agreement with lattice data at\n"
            "strong coupling, which constrains the infrared fixed point.\n")


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
    assert templates == {"title_to_abstract", "abstract_to_title", "abstract_to_category", "problem_addressed"}
    for x in out:
        roles = [m["role"] for m in x["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in x["messages"])
        assert x["id"].startswith("2301.")
    cat = next(x for x in out if x["template"] == "abstract_to_category")
    assert cat["messages"][2]["content"] == "hep-th (High Energy Physics - Theory)"


def test_normalisation_unwraps_keeps_math_and_converts_accents(tmp_path):
    assert unwrap_abstract(ABSTRACT).startswith("We compute the one-loop correction to the $\\beta$-function of a gauge")
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


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, chat, monkeypatch):
    import dataset_builders.contexts as ctx

    src = write_jsonl(tmp_path / "in.jsonl", [rec(i) for i in range(50)])
    build(chat, [str(src)], tmp_path / "out")  # a previous good build
    before = (tmp_path / "out" / "train.jsonl").read_bytes()
    calls = {"n": 0}
    real = ctx.render

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr("dataset_builders.pipeline.contexts.render", boom)
    with pytest.raises(KeyboardInterrupt):
        build(chat, [str(write_jsonl(tmp_path / "in2.jsonl", [rec(i) for i in range(60)]))], tmp_path / "out")
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
    p = run_cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "o", "--limit", "7",
                "--no-progress", check_rc=0)
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["read"] == 7
    h = run_cli("build", "--help", check_rc=0)
    assert "--limit" in h.stdout and "hf:<dataset id>" in h.stdout
    assert "abstracts-chat" in run_cli("list-specs", check_rc=0).stdout


def test_project_sample_builds(tmp_path, chat):
    from dataset_builders.sample import write_sample

    paths = write_sample(tmp_path / "sample")
    res = build(chat, [str(paths["metadata"])], tmp_path / "out")
    c = res.manifest["counts"]
    assert c["read"] == 301 and c["kept"] > 200
    assert {"not_physics", "withdrawn", "duplicate_content"} <= set(c["dropped"])
