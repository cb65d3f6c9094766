"""Safe reading of arXiv e-prints and bulk source shards (archives built in tmp_path)."""

import gzip
import io
import os
import random
import tarfile
import time
from collections import Counter

import pytest

from dataset_builders.latex import (
    LatexError,
    Limits,
    clean_project,
    iter_source_tar,
    read_eprint,
    read_project_dir,
)
from dataset_builders.latex.archive import parse_arxiv_id

MAIN = b"\\documentclass{article}\\begin{document}\\section{Intro}Hello archive.\\end{document}\n"
MB = 1024 * 1024


def member(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    ti.mtime = 0
    return ti, data


def tar_bytes(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def zeros_gz(megabytes: int) -> bytes:
    """``megabytes`` MB of zeros as concatenated gzip members (tiny, built instantly)."""
    return gzip.compress(b"\0" * MB, compresslevel=1, mtime=0) * megabytes


def test_project_tarball_round_trip():
    data = gz(tar_bytes(member("main.tex", MAIN), member("sec/a.tex", b"\\section{A} text")))
    files = read_eprint("2301.00001.gz", data)
    assert set(files) == {"main.tex", "sec/a.tex"}
    assert clean_project(files).sections[0].title == "Intro"
    # the same tar, uncompressed
    assert set(read_eprint("x", tar_bytes(member("main.tex", MAIN)))) == {"main.tex"}


def test_single_gzipped_tex_and_plain_tex():
    assert read_eprint("2301.00002.gz", gz(MAIN)) == {"main.tex": MAIN}
    assert read_eprint("2301.00002", MAIN) == {"main.tex": MAIN}


def test_hostile_members_are_skipped_and_counted():
    latin = b"\\section{L} Schr\xf6dinger"
    junk = bytes(random.Random(0).randrange(256) for _ in range(4000)) + b"\0"
    data = gz(
        tar_bytes(
            member("main.tex", MAIN),
            member("/etc/evil.tex", b"absolute"),
            member("../escape.tex", b"dotdot"),
            member("sub/../../escape2.tex", b"dotdot"),
            member("link.tex", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
            member("hard.tex", kind=tarfile.LNKTYPE, linkname="main.tex"),
            member("dev.tex", kind=tarfile.CHRTYPE),
            member("blk.tex", kind=tarfile.BLKTYPE),
            member("fifo.tex", kind=tarfile.FIFOTYPE),
            member("fig.png", b"\x89PNG\r\n"),
            member("junk.tex", junk),
            member("latin.tex", latin),
        )
    )
    counts = Counter()
    files = read_eprint("2301.00003.gz", data, counts=counts)
    assert set(files) == {"main.tex", "latin.tex"}
    assert counts == Counter(unsafe_path=3, link=2, special_file=3, skipped_ext=1, binary_member=1)
    # non-UTF-8 source is decoded (latin-1 fallback) by the cleaner
    files["main.tex"] = MAIN.replace(b"Hello archive.", b"\\input{latin}")
    assert "Schrödinger" in clean_project(files).text


def test_gzip_bomb_single_file_stops_at_member_cap_quickly():
    bomb = zeros_gz(200)  # 200 MB of zeros once decompressed, ~200 kB compressed
    start = time.perf_counter()
    with pytest.raises(LatexError) as e:
        read_eprint("2301.00004.gz", bomb)  # default limits: 20 MB per member
    assert e.value.reason == "too_large" and "max_member_bytes" in str(e.value)
    assert time.perf_counter() - start < 2


def raw_member(name: str, size: int, data: bytes = b"") -> bytes:
    """One tar header (declaring ``size``) followed by ``data`` padded to a block."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    return ti.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def test_gzip_bomb_inside_tar_stops_at_scan_cap():
    head = raw_member("main.tex", len(MAIN), MAIN) + raw_member("bomb.tex", 200 * MB)
    data = gz(head) + zeros_gz(200)
    start = time.perf_counter()
    with pytest.raises(LatexError) as e:
        read_eprint("2301.00005.gz", data, Limits(max_scan_bytes=24 * MB))
    assert e.value.reason == "too_large" and "max_scan_bytes" in str(e.value)
    assert time.perf_counter() - start < 2


def test_truncated_and_corrupt_archives():
    whole = gz(tar_bytes(member("main.tex", MAIN * 200), member("b.tex", MAIN * 200)))
    for cut in (len(whole) // 2, len(whole) - 6):
        with pytest.raises(LatexError) as e:
            read_eprint("t.gz", whole[:cut])
        assert e.value.reason == "truncated", cut
    with pytest.raises(LatexError) as e:
        read_eprint("c.gz", b"\x1f\x8b\x08\x00" + b"garbage" * 50)
    assert e.value.reason in ("corrupt", "truncated")


def test_pdf_postscript_and_binary_payloads():
    pdf = b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj"
    for data in (pdf, gz(pdf), gz(tar_bytes(member("paper.pdf", pdf)))):
        with pytest.raises(LatexError) as e:
            read_eprint("p", data)
        assert e.value.reason == "pdf_only"
    with pytest.raises(LatexError) as e:
        read_eprint("ps.gz", gz(b"%!PS-Adobe-2.0\n"))
    assert e.value.reason == "postscript_only"
    junk = bytes(random.Random(1).randrange(256) for _ in range(3000)) + b"\0\0"
    for data in (junk, gz(junk)):
        with pytest.raises(LatexError) as e:
            read_eprint("j", data)
        assert e.value.reason == "binary"


def test_file_count_and_paper_size_caps():
    many = gz(tar_bytes(*(member(f"f{k}.tex", b"x") for k in range(10))))
    with pytest.raises(LatexError) as e:
        read_eprint("m", many, Limits(max_files=5))
    assert e.value.reason == "too_many_files"
    big = gz(tar_bytes(*(member(f"f{k}.tex", b"x" * 600) for k in range(3))))
    with pytest.raises(LatexError) as e:
        read_eprint("b", big, Limits(max_paper_bytes=1000))
    assert e.value.reason == "too_large"
    counts = Counter()
    with pytest.raises(LatexError) as e:
        read_eprint("s", big, Limits(max_member_bytes=500), counts)
    assert e.value.reason == "no_tex_source" and counts["member_too_large"] == 3


def test_member_over_cap_is_skipped_not_fatal():
    data = gz(tar_bytes(member("main.tex", MAIN), member("huge.tex", b"y" * 5000)))
    counts = Counter()
    files = read_eprint("h", data, Limits(max_member_bytes=1000), counts)
    assert set(files) == {"main.tex"} and counts["member_too_large"] == 1


def test_arxiv_ids():
    assert parse_arxiv_id("2212.01234") == "2212.01234"
    assert parse_arxiv_id("0704.0001v2") == "0704.0001"
    assert parse_arxiv_id("astro-ph0001001") == "astro-ph/0001001"
    assert parse_arxiv_id("hep-th9901001") == "hep-th/9901001"
    assert parse_arxiv_id("README") is None


def write_shard(path, *members):
    path.write_bytes(tar_bytes(*members))
    return path


def test_iter_source_tar_yields_files_or_errors(tmp_path):
    good = gz(tar_bytes(member("main.tex", MAIN)))
    shard = write_shard(
        tmp_path / "arXiv_src_2301_001.tar",
        member("2301", kind=tarfile.DIRTYPE),
        member("2301/2301.00001.gz", good),
        member("2301/2301.00002.gz", gz(MAIN)),
        member("2301/astro-ph0001001.gz", gz(MAIN)),
        member("2301/2301.00003.pdf", b"%PDF-1.4"),
        member("2301/2301.00004.gz", b"\x1f\x8b\x08\x00junkjunk"),
        member("2301/2301.00005.gz", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        member("2301/README.txt", b"hello"),
    )
    out = list(iter_source_tar(shard))
    ids = [i for i, _ in out]
    assert ids == [
        "2301.00001",
        "2301.00002",
        "astro-ph/0001001",
        "2301.00003",
        "2301.00004",
        "2301.00005",
        "README.txt",
    ]
    res = dict(out)
    assert set(res["2301.00001"]) == {"main.tex"} and set(res["astro-ph/0001001"]) == {"main.tex"}
    reasons = {i: r.reason for i, r in out if isinstance(r, LatexError)}
    assert reasons == {
        "2301.00003": "pdf_only",
        "2301.00004": "corrupt",
        "2301.00005": "unsafe_member",
        "README.txt": "bad_member_name",
    }


def test_truncated_shard_never_raises(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        member("2301/2301.00001.gz", gz(tar_bytes(member("main.tex", MAIN)))),
        member("2301/2301.00002.gz", gz(MAIN * 500) + b"x" * 20000),
    )
    data = shard.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) - 15000])
    out = list(iter_source_tar(cut))
    assert out[0][0] == "2301.00001" and isinstance(out[0][1], dict)
    assert isinstance(out[-1][1], LatexError) and out[-1][1].reason == "shard_truncated"
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"not a tar at all" * 10)
    out = list(iter_source_tar(empty))
    assert len(out) == 1 and out[0][1].reason == "shard_truncated"


def test_read_project_dir_skips_links_and_specials(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.tex").write_bytes(MAIN)
    (tmp_path / "sub" / "part.tex").write_bytes(b"part")
    (tmp_path / "fig.pdf").write_bytes(b"%PDF")
    os.symlink("/etc/hostname", tmp_path / "link.tex")
    os.symlink(tmp_path / "sub", tmp_path / "linkdir")
    os.mkfifo(tmp_path / "pipe.tex")
    counts = Counter()
    files = read_project_dir(tmp_path, counts=counts)
    assert set(files) == {"main.tex", "sub/part.tex"}
    assert counts["link"] == 1 and counts["special_file"] == 1 and counts["skipped_ext"] == 1
