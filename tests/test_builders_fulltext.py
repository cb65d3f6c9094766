"""The full-text builder: LaTeX shards -> fulltext-completion, sections-chat and mixed, with the
metadata join, counted drops, the shared split, resume, worker-count independence, token
bounds and mixture ratios. Every input is written here (the project's sample + tar shards)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pytest

from dataset_builders import cli
from dataset_builders import spec as spec_mod
from dataset_builders.fulltext import build_fulltext, process_shard
from dataset_builders.fulltext.examples import ChunkRenderer
from dataset_builders.fulltext.mixture import build_mixture
from dataset_builders.latex import Limits
from dataset_builders.normalize import unwrap
from dataset_builders.pipeline import build as build_metadata
from dataset_builders.records import Paper
from dataset_builders.sample import write_sample
from dataset_builders.split import SPLITS, bucket, split_of

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
ABSTRACT = ("We compute the one-loop correction to the beta function of a gauge theory with many "
            "flavours and find agreement with lattice data at strong coupling, which constrains "
            "the infrared fixed point of the theory.")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def tok(tokenizer_built):
    """The real Qwen2.5 tokenizer: full-text contexts count tokens with it."""
    return tokenizer_built


@pytest.fixture(scope="module")
def sample(tmp_path_factory, tok):
    return write_sample(tmp_path_factory.mktemp("ft-sample"))


def meta(aid: str, title: str, categories: str = "hep-th", abstract: str = ABSTRACT, **kw) -> dict:
    d = {"id": aid, "submitter": "A. B.", "authors": "A. B", "title": title, "comments": "10 pages",
         "journal-ref": None, "doi": None, "report-no": None, "categories": categories, "license": None,
         "abstract": "  " + abstract + "\n",
         "versions": [{"version": "v1", "created": "Mon, 2 Jan 2024 10:00:00 GMT"}],
         "update_date": "2024-01-03", "authors_parsed": [["B", "A.", ""]]}
    d.update(kw)
    return d


def write_meta(path: Path, recs: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return path


def tex(title: str, sections: list[tuple[str, str]], preamble: str = "", tail: str = "") -> str:
    body = "".join(f"\\{'sub' if name.startswith('>') else ''}section{{{name.lstrip('>')}}}\n{text}\n\n"
                   for name, text in sections)
    return (f"\\documentclass{{article}}\n{preamble}\n\\title{{{title}}}\n\\begin{{document}}\n\\maketitle\n"
            f"\\begin{{abstract}}\n{ABSTRACT}\n\\end{{abstract}}\n{body}{tail}\\end{{document}}\n")


def tar_bytes(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 0
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tf.addfile(ti)
    return buf.getvalue()


def eprint(main: str, **others: str) -> bytes:
    files = {"main.tex": main.encode(), **{k.replace("__", "/"): v.encode() for k, v in others.items()}}
    return gzip.compress(tar_bytes(files), mtime=0)


def write_shard(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_bytes(members, extra))
    return path


def paper_tex(k: int, title: str) -> str:
    return tex(title, [("Introduction", f"Paper {k} opens with a question about confinement."),
                       ("Model", f"Paper {k} uses the Hubbard model $H = -t \\sum c^\\dagger c$."),
                       ("Results", f"Paper {k} finds a gap of ${k}.5$ meV."),
                       ("Conclusions", f"Paper {k} concludes that the gap is robust against disorder.")])


def ids_in(split_target: str, n: int, start: int = 0) -> list[str]:
    out, i = [], start
    while len(out) < n:
        aid = f"2402.{i:05d}"
        if split_of(aid) == split_target:
            out.append(aid)
        i += 1
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample):
    """Three shards (the sample's + two more) and metadata for all of their papers."""
    root = tmp_path_factory.mktemp("ft-corpus")
    src = root / "src"
    src.mkdir()
    (src / sample["sources"].name).write_bytes(sample["sources"].read_bytes())
    recs = [json.loads(x) for x in sample["metadata"].read_text().splitlines()]
    ids = ids_in("test", 2) + ids_in("validation", 2) + ids_in("train", 4)
    for s, chunk in enumerate((ids[:4], ids[4:])):
        members = {}
        for aid in chunk:
            title = f"Gap structure number {aid[-5:]} in layered superconductors"
            members[f"2402/{aid}.gz"] = eprint(paper_tex(int(aid[-5:]), title))
            recs.append(meta(aid, title, categories="cond-mat.supr-con"))
        write_shard(src / f"arXiv_src_2402_00{s + 1}.tar", members)
    return {"src": src, "metadata": write_meta(root / "meta.jsonl", recs), "ids": ids, "root": root}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def all_out(out: Path) -> dict[str, list[dict]]:
    return {s: lines(out / f"{s}.jsonl") for s in SPLITS}


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def fbuild(spec, inputs, out, metadata=(), **kw):
    log: list[str] = []
    res = build_fulltext(spec_mod.load(spec) if isinstance(spec, str) else spec, [str(i) for i in inputs], out,
                         metadata=[str(m) for m in metadata], log=log.append, **kw)
    return res, log


def spec_variant(tmp: Path, base: str, **options) -> spec_mod.Spec:
    raw = spec_mod.yaml.safe_load(spec_mod.resolve(base).read_text())
    raw["options"] = {**raw.get("options", {}), **options}
    p = tmp / f"{base}-variant.yml"
    p.write_text(json.dumps(raw))
    return spec_mod.load(str(p))


# ----------------------------------------------------------------------------- tests

def test_sample_builds_all_three_contexts_with_metadata_join(tmp_path, sample):
    work = tmp_path / "work"
    recs = {r["id"]: r for r in map(json.loads, sample["metadata"].read_text().splitlines())}
    res, log = fbuild("fulltext-completion", [sample["sources"]], tmp_path / "fc", [sample["metadata"]],
                      work_dir=work)
    c = res.manifest["counts"]
    assert c["read"] == 8 and c["kept"] == 8 and c["read"] == c["kept"] + sum(c["dropped"].values())
    assert res.manifest["fields"] == ["text", "id", "chunk"]
    assert res.manifest["fulltext"]["metadata"]["joined"] == 8
    chunks = [x for xs in all_out(tmp_path / "fc").values() for x in xs]
    assert len(chunks) == 8 and all(x["chunk"] == 0 for x in chunks)
    for x in chunks:  # the metadata's title (unwrapped), then abstract and every section
        assert x["text"].startswith("# " + unwrap(recs[x["id"]]["title"]) + "\n\n## Abstract\n\n")
        for h in ("## Introduction", "## Model", "## Results", "## Conclusions"):
            assert h in x["text"]
        assert "\\begin{equation}" in x["text"] and "Lengthy algebra" not in x["text"]  # appendix dropped
    assert any("arXiv_src_2401_001.tar: 8 papers, 8 cleaned" in line for line in log)

    res, _ = fbuild("sections-chat", [sample["sources"]], tmp_path / "sc", [sample["metadata"]], work_dir=work)
    pairs = [x for xs in all_out(tmp_path / "sc").values() for x in xs]
    assert {x["template"] for x in pairs} == {"write_introduction", "state_conclusions", "describe_methods",
                                              "summarise_results"}
    for x in pairs:
        assert [m["role"] for m in x["messages"]] == ["system", "user", "assistant"]
        assert x["messages"][2]["content"]
    concl = next(x for x in pairs if x["template"] == "state_conclusions")
    assert concl["messages"][2]["content"] == "We have presented a consistent picture; open questions remain."
    intro = next(x for x in pairs if x["template"] == "write_introduction")
    assert unwrap(recs[intro["id"]]["title"]) in intro["messages"][1]["content"]
    assert res.manifest["fulltext"]["context"]["templates"]["state_conclusions"]["written"] == 8
    assert "## Full text" in (tmp_path / "sc" / "README.md").read_text()

    log = []
    mres = build_mixture(spec_mod.load("mixed"), [str(sample["sources"]), str(sample["metadata"])],
                         tmp_path / "mixed", work_dir=work, log=log.append)
    assert any("done earlier" in line for line in log)  # the map was shared
    m = json.loads((tmp_path / "mixed" / "manifest.json").read_text())
    assert m == mres.manifest
    assert [c["name"] for c in m["components"]] == ["abstracts-chat", "fulltext-completion", "sections-chat"]
    for comp in m["components"]:
        d = tmp_path / "mixed" / comp["name"]
        cm = json.loads((d / "manifest.json").read_text())
        for s in SPLITS:
            data = (d / f"{s}.jsonl").read_bytes()
            assert len(data.splitlines()) == comp["examples"][s] == cm["counts"]["examples"][s]
            import hashlib
            assert hashlib.sha256(data).hexdigest() == m["checksums"][f"{comp['name']}/{s}.jsonl"]
        assert (d / "README.md").exists()
    assert "| `fulltext-completion/` | completion |" in (tmp_path / "mixed" / "README.md").read_text()


def test_mixed_ratio_within_tolerance_and_deterministic(tmp_path, sample):
    args = ([str(sample["sources"]), str(sample["metadata"])], )
    m1 = build_mixture(spec_mod.load("mixed"), *args, tmp_path / "a", log=lambda s: None).manifest
    for c in m1["components"]:
        assert abs(c["share"]["train"]["tokens"] - c["target_share"]) < 0.03, c
    assert [c["fraction_kept"] for c in m1["components"]].count(1.0) == 1  # the scarcest is kept whole
    # examples as the unit, in another spec: the example shares follow instead
    spec = spec_variant(tmp_path, "mixed", unit="examples", components=[
        {"spec": "abstracts-chat", "weight": 3}, {"spec": "sections-chat", "weight": 1}])
    m2 = build_mixture(spec, *args, tmp_path / "b", work_dir=tmp_path / "a.work", log=lambda s: None).manifest
    for c in m2["components"]:
        assert abs(c["share"]["train"]["examples"] - c["target_share"]) < 0.03, c
    # deterministic subsample of the same component; splits unchanged
    again = build_mixture(spec_mod.load("mixed"), *args, tmp_path / "c", work_dir=tmp_path / "a.work",
                          log=lambda s: None)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "c") and again.manifest == m1
    for comp in ("abstracts-chat", "fulltext-completion", "sections-chat"):
        for s, xs in all_out(tmp_path / "a" / comp).items():
            assert all(split_of(x["id"]) == s for x in xs)


def test_multi_section_paper_keeps_every_section(tmp_path):
    names = ["Introduction", ">Motivation", "Theoretical framework", "Lattice setup", ">Gauge action",
             ">Fermion action", "Numerical results", "Finite-size effects", "Comparison with experiment",
             "Summary of the method", "Conclusions and outlook", "Acknowledgements note"]
    secs = [(n, f"Unique sentence {k} about {n.lstrip('>').lower()}.\n\nSecond paragraph {k} with $x_{k}$.")
            for k, n in enumerate(names)]
    appendix = "\\appendix\n\\section{Extra}\nApp.\n"
    src = write_shard(tmp_path / "arXiv_src_2403_001.tar",
                      {"2403/2403.00001.gz": eprint(tex("Many sections", secs, tail=appendix))})
    md = write_meta(tmp_path / "m.jsonl", [meta("2403.00001", "Many sections of lattice gauge theory")])
    res, _ = fbuild("fulltext-completion", [src], tmp_path / "fc", [md])
    (x,) = [x for xs in all_out(tmp_path / "fc").values() for x in xs]
    pos = [x["text"].index(("### " if n.startswith(">") else "## ") + n.lstrip(">") + "\n") for n in names]
    assert pos == sorted(pos)
    for k in range(len(names)):
        assert f"Unique sentence {k} " in x["text"] and f"Second paragraph {k} with $x_{k}$." in x["text"]
    assert "App." not in x["text"]
    spec = spec_variant(tmp_path, "sections-chat", min_section_chars=10)
    fbuild(spec, [src], tmp_path / "sc", [md], work_dir=tmp_path / "fc.work")
    got = {x["template"]: x["messages"][2]["content"] for xs in all_out(tmp_path / "sc").values() for x in xs}
    assert "Unique sentence 1 about motivation" in got["write_introduction"]  # subsections included
    assert "### Motivation" in got["write_introduction"] and "Theoretical" not in got["write_introduction"]
    assert got["state_conclusions"].startswith("Unique sentence 10 ")  # the last matching heading
    assert got["describe_methods"].startswith("Unique sentence 2 ")  # "theoretical framework"
    assert got["summarise_results"].startswith("Unique sentence 6 ")


def test_splits_agree_across_contexts_no_leakage(tmp_path, corpus):
    where: dict[str, dict[str, str]] = {}
    for name in ("fulltext-completion", "sections-chat"):
        fbuild(name, [corpus["src"]], tmp_path / name, [corpus["metadata"]], work_dir=tmp_path / "work")
    build_metadata(spec_mod.load("abstracts-chat"), [str(corpus["metadata"])], tmp_path / "abstracts-chat")
    for name in ("fulltext-completion", "sections-chat", "abstracts-chat"):
        for s, xs in all_out(tmp_path / name).items():
            for x in xs:
                assert where.setdefault(x["id"], {}).setdefault(name, s) == s
    for aid in corpus["ids"]:
        assert len(where[aid]) == 3, aid
        assert set(where[aid].values()) == {split_of(aid)}
    assert {split_of(a) for a in corpus["ids"]} == set(SPLITS)


def test_bad_inputs_are_counted_drops_and_build_succeeds(tmp_path, capsys):
    good = tex("A good paper", [("Introduction", "Fine text here.")])
    unsafe_members = [tarfile.TarInfo("../evil.tex"), tarfile.TarInfo("link.tex")]
    unsafe_members[1].type, unsafe_members[1].linkname = tarfile.SYMTYPE, "/etc/passwd"
    unsafe = gzip.compress(tar_bytes({"main.tex": good.encode()}, unsafe_members), mtime=0)
    link = tarfile.TarInfo("2401.00005.gz")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    src = tmp_path / "src"
    write_shard(src / "arXiv_src_2401_001.tar", {
        "2401.00001.gz": eprint(good),
        "2401.00002.pdf": b"%PDF-1.4 not latex",
        "2401.00003.gz": gzip.compress(b"\0" * MB, compresslevel=1, mtime=0) * 24,  # 24 MB of zeros
        "2401.00004.gz": unsafe,
        "2401.00006.gz": eprint(tex("Bomb", [("Intro", "Boom \\a.")], preamble="\\def\\a{\\a\\a}")),
        "2401.00007.gz": eprint(good.replace("A good paper", "No metadata")),
        "2401.00008.gz": eprint(good.replace("A good paper", "Not physics")),
        "2401.00009.gz": b"\x1f\x8b\x08\x00corrupt",
    }, [link])
    whole = tar_bytes({f"2401.000{k}.gz": eprint(good.replace("good", f"good {k}")) + b"x" * 3000 for k in (10, 11)})
    (src / "arXiv_src_2401_002.tar").write_bytes(whole[: len(whole) - 2500])  # cut short
    (src / "arXiv_src_2401_003.tar").write_bytes(b"this is not a tar file at all" * 40)
    ids = ["2401.00001", "2401.00002", "2401.00003", "2401.00004", "2401.00005", "2401.00006", "2401.00009",
           "2401.00010", "2401.00011"]
    md = write_meta(tmp_path / "m.jsonl", [meta(i, f"Paper {i}") for i in ids] +
                    [meta("2401.00008", "Not physics", categories="cs.LG")])
    rc = cli.main(["build", "--spec", "fulltext-completion", "--input", str(src), "--metadata", str(md),
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    c = m["counts"]
    d = c["dropped"]
    for reason in ("pdf_only", "too_large", "unsafe_member", "macro_recursion", "no_metadata", "not_physics",
                   "corrupt"):
        assert d.get(reason) == 1, (reason, d)
    assert c["read"] == c["kept"] + sum(d.values())
    assert {i["issue"] for i in m["input_issues"]} == {"shard_truncated"}
    assert {i["input"] for i in m["input_issues"]} == {"arXiv_src_2401_002.tar", "arXiv_src_2401_003.tar"}
    assert m["fulltext"]["archive_members_skipped"] == {"link": 1, "unsafe_path": 1}
    kept = {x["id"] for xs in all_out(tmp_path / "out").values() for x in xs}
    assert {"2401.00001", "2401.00004"} <= kept and "2401.00006" not in kept
    err = capsys.readouterr().err
    assert "dropped 1 (pdf_only)" in err and "arXiv_src_2401_003.tar: 0 papers" in err


def test_resume_skips_finished_shards_and_redoes_a_removed_marker(tmp_path, corpus):
    out, work = tmp_path / "out", tmp_path / "out.work" / "shards"
    _, log1 = fbuild("fulltext-completion", [corpus["src"]], out, [corpus["metadata"]])
    first = files_of(out)
    markers = sorted(work.glob("*.done"))
    assert len(markers) == 3 and sum(x.startswith("[shard") and "cleaned" in x for x in log1) == 3
    assert not any(x.startswith("[shard") and "done earlier" in x for x in log1)
    for mk in markers:
        d = json.loads(mk.read_text())
        assert len(d["fingerprint"]) == 64 and d["records"] >= 4 and d["cleaned"] == d["records"]
    _, log2 = fbuild("fulltext-completion", [corpus["src"]], out, [corpus["metadata"]])
    assert sum(x.startswith("[shard") and "done earlier" in x for x in log2) == 3 and files_of(out) == first
    before = {p.name: p.stat().st_mtime_ns for p in work.glob("*.jsonl")}
    markers[1].unlink()
    (work / "stale.jsonl.tmp-1").write_text("half a shard")  # an interrupted run's leftovers are harmless
    _, log3 = fbuild("fulltext-completion", [corpus["src"]], out, [corpus["metadata"]])
    redone = [x for x in log3 if x.startswith("[shard") and "done earlier" not in x]
    assert len(redone) == 1 and markers[1].stem.split("-")[0] in redone[0]
    after = {p.name: p.stat().st_mtime_ns for p in work.glob("*.jsonl")}
    assert [n for n in before if before[n] != after[n]] == [markers[1].stem + ".jsonl"]
    assert files_of(out) == first and markers[1].exists()


def test_two_workers_give_byte_identical_output(tmp_path, corpus):
    fbuild("sections-chat", [corpus["src"]], tmp_path / "one", [corpus["metadata"]], workers=1)
    p = subprocess.run([sys.executable, "-m", "dataset_builders", "build", "--spec", "sections-chat",
                        "--input", str(corpus["src"]), "--metadata", str(corpus["metadata"]),
                        "--out", str(tmp_path / "two"), "--workers", "2", "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert sum(line.startswith("[shard") for line in p.stderr.splitlines()) == 3
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")


def test_chunks_stay_within_the_token_bound(tmp_path, tok):
    sentence = ("The renormalised coupling flows to a fixed point where $g^* = {k}$ and the anomalous "
                "dimension is small.")
    paras = [" ".join(sentence.format(k=k + j) for j in range(1 + k % 5)) for k in range(60)]
    paras[7] = " ".join(sentence.format(k=j) for j in range(40))  # one paragraph of ~900 tokens
    paras[20] = "$$" + " + ".join(f"a_{{{j}}} x^{{{j}}}" for j in range(300)) + "$$"  # no sentence end at all
    secs = [(f"Part {k}", "\n\n".join(paras[k * 6:(k + 1) * 6])) for k in range(10)]
    title = "Renormalisation group flows " + "and fixed points " * 12
    src = write_shard(tmp_path / "arXiv_src_2404_001.tar", {"2404.00001.gz": eprint(tex(title, secs))})
    md = write_meta(tmp_path / "m.jsonl", [meta("2404.00001", title)])
    spec = spec_variant(tmp_path, "fulltext-completion", chunk_tokens=512, overlap_tokens=64)
    fbuild(spec, [src], tmp_path / "out", [md])
    chunks = [x for xs in all_out(tmp_path / "out").values() for x in xs]
    assert len(chunks) > 8 and [x["chunk"] for x in chunks] == list(range(len(chunks)))
    lens = [len(e.ids) for e in tok.encode_batch_fast([x["text"] for x in chunks], add_special_tokens=False)]
    assert max(lens) <= 512 and min(lens) > 100
    head = "# " + " ".join(title.split()) + "\n\n"
    assert all(x["text"].startswith(head) for x in chunks)
    assert sum("(continued)" in x["text"] or x["text"][len(head):].startswith("## Part") for x in chunks) > 5
    text = "\n".join(x["text"] for x in chunks)
    for p in paras:
        for piece in p.split(". "):
            assert piece[:60] in text  # nothing lost
    # the renderer's token counts are exact, not estimates
    r = ChunkRenderer(spec, tok)
    rec = json.loads((tmp_path / "out.work" / "shards").glob("*.jsonl").__next__().read_text())
    ex = r(spec, Paper(id="2404.00001", title=" ".join(title.split()), abstract=ABSTRACT, categories=["hep-th"],
                       extra={"fulltext": rec}), bucket("2404.00001"))
    assert r.last_tokens == [len(e.ids) for e in tok.encode_batch_fast([x["text"] for x in ex],
                                                                       add_special_tokens=False)]


def test_process_shard_is_a_plain_function_of_its_shard(tmp_path, sample):
    r1 = process_shard(str(sample["sources"]), tmp_path / "w1", Limits())
    r2 = process_shard(str(sample["sources"]), tmp_path / "w2", Limits())
    assert (r1.records, r1.cleaned, r1.fingerprint) == (8, 8, r2.fingerprint)
    a, b = sorted((tmp_path / "w1").iterdir()), sorted((tmp_path / "w2").iterdir())
    assert [p.name for p in a] == [p.name for p in b]
    assert [p.read_bytes() for p in a if p.suffix != ".done"] == [p.read_bytes() for p in b if p.suffix != ".done"]


def test_cli_errors_are_one_line_with_exit_2(tmp_path, sample, capsys):
    def err(*argv):
        rc = cli.main(["build", *map(str, argv), "--out", str(tmp_path / "o"), "--no-progress"])
        e = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(e) == 1 and e[0].startswith("dataset_builders: error: "), e
        return e[0]

    assert "unknown spec 'no-such-spec'" in err("--spec", "no-such-spec", "--input", sample["metadata"])
    assert "input not found" in err("--spec", "fulltext-completion", "--input", tmp_path / "missing")
    assert "no LaTeX sources" in err("--spec", "sections-chat", "--input", sample["metadata"])
    assert "no metadata" in err("--spec", "fulltext-completion", "--input", sample["sources"])
    assert "metadata not found" in err("--spec", "mixed", "--input", sample["sources"], "--metadata", tmp_path / "x")
    assert "--workers" in err("--spec", "mixed", "--input", sample["sources"], "--workers", "0")
    p = subprocess.run([sys.executable, "-m", "dataset_builders", "build", "--spec", "fulltext-completion",
                        "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no input given" in p.stderr


def test_eprints_project_folders_and_unarxive_inputs(tmp_path):
    good = tex("Loose", [("Introduction", "An introduction that is long enough to count as one."),
                         ("Conclusions", "The conclusions of a loose e-print, stated plainly here.")])
    eprints = tmp_path / "eprints"
    eprints.mkdir()
    (eprints / "2405.00001.gz").write_bytes(eprint(good))
    (eprints / "hep-th9901001.gz").write_bytes(gzip.compress(good.encode(), mtime=0))
    (eprints / "notes.txt").write_text("not a paper")
    proj = tmp_path / "projects" / "2405.00002"
    (proj / "sec").mkdir(parents=True)
    (proj / "main.tex").write_text(good.replace("\\section{Conclusions}", "\\input{sec/c}\n\\section{Conclusions}"))
    (proj / "sec" / "c.tex").write_text("\\section{Discussion}\nAn included section from a subfolder.\n")
    unarxive = tmp_path / "ua.jsonl"
    body = [{"section": s, "sec_number": str(k + 1), "sec_type": "section", "text": f"{s} text {{{{formula:f}}}}."}
            for k, s in enumerate(["Introduction", "Methods", "Conclusion"])]
    line = {"paper_id": "2405.00003v1", "metadata": meta("2405.00003", "An unarXive paper"),
            "abstract": {"text": ABSTRACT}, "body_text": body, "ref_entries": {"f": {"latex": "E=mc^2"}}}
    unarxive.write_text(json.dumps(line) + "\n" + "{broken\n")
    md = write_meta(tmp_path / "m.jsonl", [meta(i, f"Paper {i}") for i in ("2405.00001", "hep-th/9901001",
                                                                         "2405.00002")])
    res, _ = fbuild("fulltext-completion", [eprints, tmp_path / "projects", unarxive], tmp_path / "out", [md])
    c = res.manifest["counts"]
    assert c["kept"] == 4 and c["dropped"] == {"bad_json": 1}, c
    out = {x["id"]: x["text"] for xs in all_out(tmp_path / "out").values() for x in xs}
    assert set(out) == {"2405.00001", "hep-th/9901001", "2405.00002", "2405.00003"}
    assert "## Discussion\n\nAn included section from a subfolder." in out["2405.00002"]
    assert out["2405.00003"].startswith("# An unarXive paper\n\n") and "$E=mc^2$" in out["2405.00003"]
    assert res.manifest["fulltext"]["ignored_files"] == 1
    # without metadata for the LaTeX papers only the unarXive line (own metadata) enters
    res, _ = fbuild("fulltext-completion", [eprints, unarxive], tmp_path / "out2",
                    [write_meta(tmp_path / "none.jsonl", [])])
    assert res.manifest["counts"]["dropped"] == {"no_metadata": 2, "bad_json": 1}
