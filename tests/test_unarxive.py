"""unarXive JSONL reader on tiny files written by the test."""

import gzip
import json
from collections import Counter

from dataset_builders.latex import Section
from dataset_builders.readers.unarxive import iter_unarxive


def para(section, number, sec_type, text):
    return {
        "section": section,
        "sec_number": number,
        "sec_type": sec_type,
        "content_type": "paragraph",
        "text": text,
        "cite_spans": [],
        "ref_spans": [],
    }


PAPER = {
    "paper_id": "2212.00001v2",
    "metadata": {
        "id": "2212.00001",
        "title": "A  Paper\n  on Things",
        "categories": "hep-th",
        "abstract": "meta abstract",
    },
    "abstract": {"section": "Abstract", "text": "  We study\n  $x$ things.\n"},
    "body_text": [
        para("Introduction", "1", "section", "First {{formula:f1}} para {{cite:abc}}."),
        para("Introduction", "1", "section", "Second para, see {{figure:g1}}."),
        para("Setup", "1.1", "subsection", "Display {{formula:f2}} here."),
        para("Results", "2", "section", "Done."),
        para("Introduction", "1", "section", "Back again."),
        para("Results", "2", "section", "   "),
    ],
    "ref_entries": {
        "f1": {"latex": "E=mc^2", "type": "formula"},
        "f2": {"latex": "\\begin{align}a&=b\\end{align}", "type": "formula"},
    },
}


def write_jsonl(path, lines, compress=False):
    data = "\n".join(lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_groups_paragraphs_by_section_in_order(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps(PAPER)])
    drops = Counter()
    papers = list(iter_unarxive(path, drops))
    assert len(papers) == 1 and not drops
    p = papers[0]
    assert p["id"] == "2212.00001"
    assert p["metadata"]["categories"] == "hep-th"
    assert p["title"] == "A Paper on Things"
    assert p["abstract"] == "We study $x$ things."
    assert p["sections"] == [
        Section(2, "Introduction", "First $E=mc^2$ para [cite].\n\nSecond para, see [ref]."),
        Section(3, "Setup", "Display \\begin{align}a&=b\\end{align} here."),
        Section(2, "Results", "Done."),
        Section(2, "Introduction", "Back again."),
    ]
    assert p["text"].startswith(
        "# A Paper on Things\n\n## Abstract\n\nWe study $x$ things.\n\n## Introduction\n\n"
    )


def test_malformed_lines_are_counted_drops(tmp_path):
    no_body = dict(PAPER, body_text=[])
    lines = [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"metadata": {}, "body_text": []}),
        json.dumps(dict(PAPER, body_text="oops")),
        json.dumps(no_body),
        "",
        json.dumps(dict(PAPER, paper_id="astro-ph/0001001")),
    ]
    path = write_jsonl(tmp_path / "b.jsonl.gz", lines, compress=True)
    drops = Counter()
    papers = list(iter_unarxive(path, drops))
    assert [p["id"] for p in papers] == ["astro-ph/0001001"]
    assert drops == Counter(bad_json=1, not_object=1, missing_id=1, bad_body=1, empty_body=1)


def test_truncated_gzip_stops_with_a_count(tmp_path):
    data = gzip.compress(("\n".join([json.dumps(PAPER)] * 50)).encode())
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    drops = Counter()
    papers = list(iter_unarxive(path, drops))
    assert drops["decode_error"] == 1
    assert all(p["id"] == "2212.00001" for p in papers)
