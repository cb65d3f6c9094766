"""Nothing lost, nothing leaked: the builders tried the way a careless or hostile user would.

Each test runs the command line (or the library call a user makes) and checks what is left on
disk: a user's files are never deleted or overwritten, links never lead the reader outside the
folder it was given, dead builds leave nothing a rerun does not clean, and every unusable
invocation is one line with exit 2 before any work.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from dataset_builders import harvest as hv
from dataset_builders.split import canonical_id
from tests.fixtures_oai import arxiv_record, list_records_page

ROOT = Path(__file__).resolve().parent.parent
ABSTRACT = ("We compute the one-loop correction to the beta function of a gauge theory with N_f "
            "flavours and find agreement with lattice data at strong coupling, which constrains the "
            "infrared fixed point of the theory.")


def rec(i: int, **kw) -> dict:
    d = {"id": f"2301.{i:05d}", "submitter": "A. B.", "authors": "A. B", "title": f"Gauge theory number {i}",
         "comments": None, "journal-ref": None, "doi": None, "report-no": None, "categories": "hep-th",
         "license": None, "abstract": ABSTRACT.replace("one-loop", f"{i}-loop"),
         "versions": [{"version": "v1", "created": "Mon, 2 Jan 2023 10:00:00 GMT"}],
         "update_date": "2023-01-03", "authors_parsed": [["B", "A.", ""]]}
    d.update(kw)
    return d


def snapshot(path: Path, n: int = 30, start: int = 0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(rec(i, **kw)) + b"\n" for i in range(start, start + n)))
    return path


def cli(*args, env=None, cwd=ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataset_builders", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def one_line_exit_2(p: subprocess.CompletedProcess, needle: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert needle in lines[0], lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. --out never eats files

def test_out_naming_a_folder_of_user_files_is_refused_and_untouched(tmp_path):
    d = tmp_path / "d"
    src = snapshot(d / "raw" / "snapshot.jsonl")
    (d / "notes").mkdir()
    (d / "notes" / "t.tex").write_text("x\n")
    before = tree(d)
    p = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", d, "--no-progress")
    one_line_exit_2(p, "holds the input")
    assert tree(d) == before
    elsewhere = snapshot(tmp_path / "s.jsonl")
    p = cli("build", "--spec", "abstracts-chat", "--input", elsewhere, "--out", d, "--no-progress")
    one_line_exit_2(p, "not empty and holds no earlier output")
    assert tree(d) == before


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path):
    src = snapshot(tmp_path / "s.jsonl")
    f = tmp_path / "precious.txt"
    f.write_text("keep me\n")
    p = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", f, "--no-progress")
    one_line_exit_2(p, "is a file")
    assert f.read_text() == "keep me\n"


def test_an_earlier_build_is_replaced_but_files_added_to_it_are_not_lost(tmp_path):
    src = snapshot(tmp_path / "s.jsonl", 30)
    out = tmp_path / "out"
    cli("build", "--spec", "abstracts-chat", "--input", src, "--out", out, "--no-progress").check_returncode()
    src2 = snapshot(tmp_path / "s2.jsonl", 40)
    p = cli("build", "--spec", "abstracts-chat", "--input", src2, "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "manifest.json").read_text())["counts"]["read"] == 40
    (out / "my-analysis.ipynb").write_text("{}")
    p = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", out, "--no-progress")
    one_line_exit_2(p, "holds files an earlier run did not write (my-analysis.ipynb)")
    assert (out / "my-analysis.ipynb").read_text() == "{}"
    assert json.loads((out / "manifest.json").read_text())["counts"]["read"] == 40


def test_a_manifest_cannot_make_the_build_delete_files_outside_its_folder(tmp_path):
    src = snapshot(tmp_path / "s.jsonl")
    out = tmp_path / "out"
    cli("build", "--spec", "abstracts-chat", "--input", src, "--out", out, "--no-progress").check_returncode()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    m = json.loads((out / "manifest.json").read_text())
    m["checksums"]["../victim.txt"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(m))
    p = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert victim.read_text() == "mine"


# ------------------------------------------------------------------ 2. links are not followed

def _eprint_gz(tex: str) -> bytes:
    return gzip.compress(tex.encode())


TEX = ("\\documentclass{article}\\begin{document}\\title{T}\\maketitle\\section{Introduction}%s"
       "\\end{document}\n")


def test_a_symlinked_eprint_is_not_followed(tmp_path, tokenizer_built):
    from dataset_builders.sample import write_sample

    sample = tmp_path / "sample"
    write_sample(sample)
    meta = sample / "arxiv-metadata-sample.jsonl"
    ids = [json.loads(line)["id"] for line in meta.read_text().splitlines()][:2]
    src = tmp_path / "SRC"
    src.mkdir()
    (src / f"{ids[0]}.gz").write_bytes(_eprint_gz(TEX % ("Ordinary physics text about phonons. " * 20)))
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.gz").write_bytes(_eprint_gz(TEX % ("PRIVATE-DIARY-CONTENT " * 40)))
    (src / f"{ids[1]}.gz").symlink_to(private / "secret.gz")
    out = tmp_path / "fc"
    p = cli("build", "--spec", "fulltext-completion", "--input", src, "--metadata", meta, "--out", out,
            "--no-progress", "--workers", "1")
    assert p.returncode == 0, p.stderr
    text = "".join((out / f"{s}.jsonl").read_text() for s in ("train", "validation", "test"))
    assert "phonons" in text and "PRIVATE-DIARY" not in text
    assert json.loads((out / "manifest.json").read_text())["fulltext"]["links_not_followed"] == 1


def test_a_linked_page_outside_an_oai_folder_is_not_read(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "page-00001.xml").write_bytes(list_records_page([arxiv_record("2401.00001")], None, 0, 1))
    outside = tmp_path / "elsewhere.xml"
    outside.write_bytes(list_records_page([arxiv_record("2401.00002")], None, 0, 1))
    (pages / "page-00002.xml").symlink_to(outside)
    out = tmp_path / "out"
    p = cli("build", "--spec", "abstracts-completion", "--input", pages, "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "manifest.json").read_text())["counts"]["read"] == 1


# ------------------------------------------------------------------ 3, 4. bounded harvesting

def _harvest(server, out, **kw):
    return hv.harvest(server.url, out, hv.HarvestParams("arXiv"), sleep=lambda s: None, min_interval=0,
                      log=lambda m: None, timeout=10, **kw)


@pytest.mark.parametrize("declared", [True, False])
def test_harvest_refuses_an_oversized_response_with_one_line(server, site, tmp_path, declared):
    site.omit_length = not declared
    site.pages["arXiv"][0] = b"<x>" + b"a" * (3 << 20) + b"</x>"
    with pytest.raises(hv.HarvestFailed) as e:
        _harvest(server, tmp_path / "h", max_response_bytes=1 << 20)
    assert "larger than 1 MB" in str(e.value) and "\n" not in str(e.value)
    assert not list((tmp_path / "h").glob("page-*"))


def test_harvest_cli_oversized_response_exits_1_with_one_line(server, site, tmp_path):
    site.pages["arXiv"][0] = b"a" * (2 << 20)
    p = cli("harvest", "--out", tmp_path / "h", "--base-url", server.url, "--min-interval", "0",
            "--max-response-mb", "1")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_harvest_stops_when_the_server_repeats_a_token(server, site, tmp_path):
    t1 = site.token_for("arXiv", 1)
    ids = site.ids
    site.pages["arXiv"][1] = list_records_page([arxiv_record(i) for i in ids[3:6]], t1, 3, 7)  # points back
    with pytest.raises(hv.HarvestFailed) as e:
        _harvest(server, tmp_path / "h")
    assert "already sent" in str(e.value)
    assert len(site.log) == 2  # it noticed at once
    state = json.loads((tmp_path / "h" / "harvest-state.json").read_text())
    assert state["pages"] == 1 and not state["done"]


def test_harvest_page_limit(server, site, tmp_path):
    with pytest.raises(hv.HarvestFailed) as e:
        _harvest(server, tmp_path / "h", page_limit=2)
    assert "--page-limit" in str(e.value)
    assert len(list((tmp_path / "h").glob("page-*.xml"))) == 2


# ------------------------------------------------------------------ 5. kills

def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_when_workers_run(cmd: list, n_workers: int, cwd: Path) -> set[int]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers) < n_workers and proc.poll() is None:
        workers = {c for c in _children(proc.pid)}
        time.sleep(0.005)
    assert len(workers) >= n_workers, "the build ended before its workers could be seen"
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return workers


def _gone_within(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_kill_9_of_a_metadata_build_takes_its_workers_and_a_rerun_sweeps(tmp_path):
    src = snapshot(tmp_path / "big.jsonl", 60_000)
    out = tmp_path / "out"
    workers = _kill_when_workers_run([sys.executable, "-m", "dataset_builders", "build", "--spec",
                                      "abstracts-chat", "--input", src, "--out", out, "--no-progress",
                                      "--no-input-hash", "--workers", "2"], 2, ROOT)
    assert _gone_within(workers, 10), "workers outlived the killed build"
    small = snapshot(tmp_path / "small.jsonl", 20)
    p = cli("build", "--spec", "abstracts-chat", "--input", small, "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.jsonl", "out", "small.jsonl"]


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    src = snapshot(tmp_path / "big.jsonl", 60_000)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dataset_builders", "build", "--spec", "abstracts-chat",
                             "--input", src, "--out", out, "--no-progress", "--no-input-hash", "--workers", "2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".out.partial-*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.jsonl"]


def test_kill_9_of_a_fulltext_build_takes_its_workers_and_a_rerun_sweeps(tmp_path, tokenizer_built):
    from dataset_builders.sample import write_sample

    sample = tmp_path / "sample"
    write_sample(sample)
    shard = next((sample / "src").glob("*.tar"))
    src = tmp_path / "src"
    src.mkdir()
    for k in range(6):  # six shards: work for two workers
        shutil.copy(shard, src / f"arXiv_src_2401_{k:03d}.tar")
    meta = sample / "arxiv-metadata-sample.jsonl"
    out = tmp_path / "fc"
    cmd = [sys.executable, "-m", "dataset_builders", "build", "--spec", "fulltext-completion", "--input", src,
           "--metadata", meta, "--out", out, "--no-progress", "--workers", "2"]
    workers = _kill_when_workers_run(cmd, 2, ROOT)
    assert _gone_within(workers, 15), "shard workers outlived the killed build"
    (tmp_path / "fc.work" / "shards").mkdir(parents=True, exist_ok=True)
    (tmp_path / "fc.work" / "shards" / "dead.jsonl.tmp-999999").write_text("half")
    p = cli(*cmd[3:])
    assert p.returncode == 0, p.stderr
    assert not list((tmp_path / "fc.work").rglob("*.tmp-*"))
    assert not [x for x in tmp_path.iterdir() if ".partial-" in x.name or ".old-" in x.name]


def test_two_builds_cannot_share_a_work_dir_at_once(tmp_path):
    from qwenphysics.core.errors import UserError
    from qwenphysics.core.staging import WorkDir

    with WorkDir(tmp_path / "w"):
        with pytest.raises(UserError, match="in use by another running build"):
            WorkDir(tmp_path / "w").__enter__()


# ------------------------------------------------------------------ 6. truncation

def test_truncated_zst_is_reported_not_taken_as_complete(tmp_path):
    raw = b"".join(orjson.dumps(rec(i)) + b"\n" for i in range(3000))
    c = zstandard.ZstdCompressor().compress(raw)
    f = tmp_path / "s.jsonl.zst"
    f.write_bytes(c[: len(c) * 2 // 3])
    p = cli("build", "--spec", "abstracts-chat", "--input", f, "--out", tmp_path / "out", "--no-progress")
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["input_issues"] == [{"input": str(f), "issue": "truncated_input"}]
    assert "truncated_input" in p.stderr
    whole = tmp_path / "whole.jsonl.zst"  # several frames, complete: no issue
    whole.write_bytes(c + zstandard.ZstdCompressor().compress(orjson.dumps(rec(5000)) + b"\n"))
    p = cli("build", "--spec", "abstracts-chat", "--input", whole, "--out", tmp_path / "out2", "--no-progress")
    m = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert m["input_issues"] == [] and m["counts"]["read"] == 3001


# ------------------------------------------------------------------ 7. one line, before work

def _as_nobody(cmd: list) -> list:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


def test_read_only_output_parent_is_one_line_before_work(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="qp-ro-"))  # traversable by the unprivileged user
    base.chmod(0o755)
    src = snapshot(base / "s.jsonl")
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        p = subprocess.run(_as_nobody([sys.executable, "-m", "dataset_builders", "build", "--spec",
                                       "abstracts-chat", "--input", str(src), "--out", str(ro / "out"),
                                       "--no-progress"]),
                           cwd=ROOT, capture_output=True, text=True)
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base)
    one_line_exit_2(p, "cannot create files in")


@pytest.mark.parametrize("out,needle", [("/", "file system root"), (".", "current folder")])
def test_out_root_or_current_folder_is_refused(tmp_path, out, needle):
    src = snapshot(tmp_path / "s.jsonl")
    p = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", out, "--no-progress", cwd=tmp_path)
    one_line_exit_2(p, needle)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.jsonl"]


def test_bad_metadata_is_refused_before_the_map(tmp_path):
    from dataset_builders.sample import write_sample

    sample = tmp_path / "sample"
    write_sample(sample)
    notes = tmp_path / "notes.txt"
    notes.write_text("not metadata")
    out = tmp_path / "fc"
    p = cli("build", "--spec", "fulltext-completion", "--input", sample / "src", "--metadata", notes,
            "--out", out, "--no-progress")
    one_line_exit_2(p, "unknown metadata format")
    assert not (tmp_path / "fc.work").exists() and not out.exists()


# ------------------------------------------------------------------ 8. the token counter's cache

def test_a_planted_tiktoken_cache_file_changes_nothing(tmp_path):
    from qwenphysics.qwen_tokenizer import tiktoken_path

    src = snapshot(tmp_path / "s.jsonl", 40)
    clean = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "a", "--no-progress",
                env={"TMPDIR": str(tmp_path / "t1")} if (tmp_path / "t1").mkdir() is None else None)
    assert clean.returncode == 0, clean.stderr
    evil = tmp_path / "t2"
    cache = evil / "data-gym-cache"
    cache.mkdir(parents=True)
    key = hashlib.sha1(str(tiktoken_path()).encode()).hexdigest()
    (cache / key).write_bytes(b"IQ== 0\nIg== 1\n")  # a two-token vocabulary
    planted = cli("build", "--spec", "abstracts-chat", "--input", src, "--out", tmp_path / "b", "--no-progress",
                  env={"TMPDIR": str(evil)})
    assert planted.returncode == 0, planted.stderr
    tokens = [json.loads((tmp_path / d / "manifest.json").read_text())["tokens"] for d in ("a", "b")]
    assert tokens[0] is not None and tokens[0]["train"]["mean"] > 50
    assert tokens[0] == tokens[1]


# ------------------------------------------------------------------ 9. data hygiene

def test_ids_are_canonical_or_dropped_and_nuls_stripped(tmp_path):
    rows = [rec(1, id="2101.00009V2"), rec(2, id="HEP-TH/9901001"), rec(3, id=""), rec(4, id="../../etc/passwd"),
            rec(5, title="Nul\u0000 in the title", id="2301.00005"), rec(6, id="arXiv:math.ag/0101001v3")]
    src = tmp_path / "s.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "out"
    p = cli("build", "--spec", "abstracts-completion", "--input", src, "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["dropped"] == {"bad_id": 2}
    raw = b"".join((out / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test"))
    got = {json.loads(x)["id"] for x in raw.splitlines()}
    assert got == {"2101.00009", "hep-th/9901001", "2301.00005", "math.AG/0101001"}
    assert b"\\u0000" not in raw and b"\x00" not in raw
    assert canonical_id("astro-ph/0001001v1") == "astro-ph/0001001" and canonical_id("2401.1234") == "2401.1234"
    assert canonical_id("2401.123") is None and canonical_id("hep-th/99") is None


def test_the_same_input_twice_is_refused(tmp_path):
    src = snapshot(tmp_path / "s.jsonl")
    link = tmp_path / "again.jsonl"
    link.symlink_to(src)
    for second in (src, link):
        p = cli("build", "--spec", "abstracts-chat", "--input", src, "--input", second, "--out", tmp_path / "o",
                "--no-progress")
        one_line_exit_2(p, "give each input once")


def test_fulltext_out_inside_the_input_folder_is_refused(tmp_path):
    from dataset_builders.sample import write_sample

    sample = tmp_path / "sample"
    write_sample(sample)
    p = cli("build", "--spec", "fulltext-completion", "--input", sample, "--out", sample / "fc", "--no-progress")
    one_line_exit_2(p, "inside the input folder")


def test_utf16_snapshot_names_its_encoding(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_bytes((orjson.dumps(rec(1)) + b"\n").decode().encode("utf-16"))
    p = cli("build", "--spec", "abstracts-chat", "--input", f, "--out", tmp_path / "o", "--no-progress")
    one_line_exit_2(p, "UTF-16")
    g = tmp_path / "nobom.jsonl"
    g.write_bytes((orjson.dumps(rec(1)) + b"\n").decode().encode("utf-16-le"))
    one_line_exit_2(cli("build", "--spec", "abstracts-chat", "--input", g, "--out", tmp_path / "o",
                        "--no-progress"), "UTF-16")


def test_tex_programming_does_not_survive_cleaning():
    from dataset_builders.latex import clean_project

    tex = ("\\documentclass{article}\\begin{document}\\section{Introduction}"
           "\\catcode`\\@=11 \\expandafter\\def\\csname q@x\\endcsname{y}\\global\\let\\a\\b "
           "Spin waves carry angular momentum in magnets, as the measurements show clearly. "
           "\\catcode 64=12\n\\end{document}\n")
    paper = clean_project({"main.tex": tex.encode()})
    assert "Spin waves carry angular momentum" in paper.text
    for word in ("catcode", "csname", "expandafter", "global"):
        assert word not in paper.text, paper.text
    assert paper.stats["tex_programming_dropped"] >= 4


# ------------------------------------------------------------------ 10. the demo's own folders

def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    from qwenphysics.demo import StepFailed, claim_workdir

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(StepFailed, match="not empty and was not made by the demo"):
        claim_workdir(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"
    claim_workdir(tmp_path / "new")  # new or empty: taken and marked
    claim_workdir(tmp_path / "new")  # its own: taken again


def test_demo_never_deletes_a_training_run_it_did_not_start(tmp_path):
    from qwenphysics.demo import StepFailed, claim_run_dir

    run = tmp_path / "outputs" / "qwen3b-physics"
    run.mkdir(parents=True)
    (run / "checkpoint-200").mkdir()
    (run / "adapter_model.safetensors").write_bytes(b"weights")
    with pytest.raises(StepFailed, match="did not start"):
        claim_run_dir(run)
    assert (run / "adapter_model.safetensors").read_bytes() == b"weights"
    fresh = tmp_path / "outputs" / "demo-cpu"
    claim_run_dir(fresh)
    (fresh / "checkpoint-1").mkdir()
    claim_run_dir(fresh)  # its own earlier run: replaced
    assert not (fresh / "checkpoint-1").exists()


def test_demo_works_in_its_own_folder_by_default():
    from qwenphysics.demo import DemoConfig

    cfg = DemoConfig()
    assert cfg.workdir == ROOT / "demo" and cfg.data_dir == ROOT / "demo" / "data"
