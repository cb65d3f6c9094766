"""The Kaggle arXiv metadata snapshot: one JSON object per line, 14 keys."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import orjson

from ..records import Drop, InputError, Paper
from ..split import canonical_id
from .compression import STREAM_ERRORS, open_binary

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def rfc2822_date(s: str) -> str | None:
    """`Mon, 2 Apr 2007 19:18:42 GMT` -> `2007-04-02` (fast path; None when unparseable)."""
    parts = s.split()
    try:
        if parts[0].endswith(","):
            parts = parts[1:]
        return f"{int(parts[2]):04d}-{_MONTHS[parts[1][:3]]:02d}-{int(parts[0]):02d}"
    except (IndexError, KeyError, ValueError):
        return None


def _withdrawn(comments: str | None, abstract: str) -> bool:
    text = (comments or "")[:200].lower()
    if "withdrawn" in text or "withdrawn" in abstract[:300].lower():
        head = text + " " + abstract[:300].lower()
        return any(k in head for k in (
            "has been withdrawn", "is withdrawn", "withdrawn by", "was withdrawn", "paper withdrawn",
            "article withdrawn")) or text.strip().startswith("withdrawn")
    return False


_REQUIRED_STR = ("id", "title", "abstract", "categories")


def _field_problem(d: dict) -> Drop:
    """The Drop for a dict whose required fields are not all strings (first problem wins)."""
    rid = d.get("id") if isinstance(d.get("id"), str) else None
    for key in _REQUIRED_STR:
        v = d.get(key)
        if v is None:
            return Drop(f"missing_field:{key}", rid)
        if not isinstance(v, str):
            return Drop(f"wrong_type:{key}", rid)
    raise AssertionError("no field problem")  # pragma: no cover


def paper_from_dict(d: object, source: str, want_date: bool = True) -> Paper | Drop:
    """A snapshot-schema dict -> Paper, or a Drop naming the missing / mistyped field.
    `want_date=False` skips parsing the first version's date (`created` stays None)."""
    if not isinstance(d, dict):
        return Drop("not_an_object")
    get = d.get
    raw_id, title, abstract, cat_str = get("id"), get("title"), get("abstract"), get("categories")
    if not (isinstance(raw_id, str) and isinstance(title, str) and isinstance(abstract, str)
            and isinstance(cat_str, str)):
        return _field_problem(d)
    created = problem = None
    versions = get("versions")
    if isinstance(versions, list):
        if versions and want_date:
            v0 = versions[0]
            if isinstance(v0, dict):
                c = v0.get("created")
                if isinstance(c, str):
                    created = rfc2822_date(c)
    elif versions is not None:
        problem = "wrong_type:versions"
    lic = get("license")
    if problem is None and lic is not None and not isinstance(lic, str):
        problem = "wrong_type:license"
    comments = get("comments")
    if comments is not None and not isinstance(comments, str):
        comments = None
    authors, doi, jref = get("authors"), get("doi"), get("journal-ref")
    return _paper(raw_id, title, abstract, cat_str, lic, created, authors if isinstance(authors, str) else "",
                  comments, doi if isinstance(doi, str) else None, jref if isinstance(jref, str) else None,
                  source, problem)


def _paper(raw_id: str, title: str, abstract: str, cat_str: str, lic: str | None, created: str | None,
           authors: str, comments: str | None, doi: str | None, jref: str | None, source: str,
           problem: str | None = None) -> Paper | Drop:
    """The Paper from typed fields, or a Drop: empty categories first, then `problem`."""
    rid = canonical_id(raw_id)
    if rid is None:
        return Drop("bad_id")
    cats = cat_str.split()
    if not cats:
        return Drop("missing_field:categories", rid)
    if problem:
        return Drop(problem, rid)
    return Paper(rid, title, abstract, cats, lic, created, authors, comments, doi, jref,
                 _withdrawn(comments, abstract), source)


CATEGORIES_KEY = b'"categories":"'  # as the snapshot writes it
SPACED_CATEGORIES_KEY = b'"categories": "'  # the same records re-serialised with json.dumps' separators
_KLEN = len(CATEGORIES_KEY)
_loads = orjson.loads
_JSONError = orjson.JSONDecodeError


BLOCK_BYTES = 8 << 20  # about 4k snapshot lines


def raw_categories(data: bytes | mmap.mmap, start: int = 0, end: int | None = None) -> bytes | None:
    """The `"categories":"..."` value of the line `data[start:end]`, found by a byte search (~10x
    cheaper than parsing the line), in the snapshot's compact form or with a space after the
    colon (`"categories": "..."`, as `json.dumps` writes by default); None in any other form."""
    end = len(data) if end is None else end
    i = data.find(CATEGORIES_KEY, start, end)
    if i >= 0:
        k = i + _KLEN
    else:
        i = data.find(SPACED_CATEGORIES_KEY, start, end)
        if i < 0:
            return None
        k = i + _KLEN + 1
    j = data.find(b'"', k, end)
    return data[k:j] if j >= 0 else None


# msgspec's class keywords: unknown to mypy when msgspec (and its stubs) are not installed
class _Version(msgspec.Struct, gc=False):  # type: ignore[call-arg, unused-ignore]
    created: str | None = None


class _Line(msgspec.Struct, gc=False):  # type: ignore[call-arg, unused-ignore]  # as _Version
    """The fields of a snapshot line that a Paper needs, typed as the snapshot writes them.
    Decoding into it skips the rest (`authors_parsed`, `submitter`, ...) without building
    Python objects for them."""

    id: str
    title: str
    abstract: str
    categories: str
    license: str | None = None
    authors: str = ""
    comments: str | None = None
    doi: str | None = None
    journal_ref: str | None = msgspec.field(default=None, name="journal-ref")
    versions: list[_Version] | None = None


_decode_line = msgspec.json.Decoder(_Line).decode
# a decode failure; msgspec reports bytes that are not UTF-8 as UnicodeDecodeError (a ValueError)
_NOT_IN_SHAPE = (msgspec.MsgspecError, ValueError, RecursionError)


def parse_line(line: bytes, source: str, prefilter=None, want_date: bool = True) -> Paper | Drop | None:
    """One snapshot line -> Paper, Drop, or None for a blank line (not a record).

    A line in the snapshot's own shape is decoded straight into the fields a Paper needs;
    anything else (a missing or mistyped field, a non-object, malformed JSON) goes through
    the general path, which names the problem. Fields a Paper does not use are skipped, not
    validated: a stray byte in `submitter` does not cost a paper its title and abstract.

    `prefilter(categories) -> reason | None` drops records before JSON parsing, judged on
    `raw_categories`. Lines without that exact form are parsed as usual."""
    if prefilter is not None:
        cats = raw_categories(line)
        if cats is not None:
            reason = prefilter(cats.decode("utf-8", "replace").split())
            if reason:
                return Drop(reason)
    try:
        r = _decode_line(line)
        created = None
        if want_date:
            v = r.versions
            c = v[0].created if v else None
            if c is not None:
                created = rfc2822_date(c)
        return _paper(r.id, r.title, r.abstract, r.categories, r.license, created, r.authors, r.comments, r.doi,
                      r.journal_ref, source)
    except _NOT_IN_SHAPE:
        pass
    try:
        d = _loads(line)
    except _JSONError:
        if not line.strip():
            return None
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return Drop("invalid_utf8")
        return Drop("malformed_json")
    return paper_from_dict(d, source, want_date)


def iter_blocks(path: Path, block_bytes: int, issues: list[str]) -> Iterator[bytes]:
    """Blocks of whole lines from a snapshot file (plain, .gz or .zst). A compressed stream
    that breaks off yields every complete line before the break, then records
    `truncated_input` in `issues`; an empty file records `empty_input`."""
    seen_any = False
    with open_binary(path) as f:
        if is_plain(path.name):
            rest = b""
            while True:
                chunk = f.read(block_bytes)
                if not chunk:
                    break
                seen_any = True
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data
                    continue
                rest = data[cut:]
                yield data[:cut]
            if rest:
                yield rest
        else:
            lines: list[bytes] = []
            size = 0
            try:
                for line in f:
                    seen_any = True
                    lines.append(line)
                    size += len(line)
                    if size >= block_bytes:
                        yield b"".join(lines)
                        lines, size = [], 0
            except STREAM_ERRORS as e:
                if not seen_any and not isinstance(e, EOFError):  # not a compressed stream at all
                    raise InputError(f"{path}: cannot decompress ({e.__class__.__name__}: {str(e)[:80]}); "
                                     "is it really a .gz/.zst file?") from None
                if lines:
                    yield b"".join(lines)
                issues.append("truncated_input")
                return
            if lines:
                yield b"".join(lines)
    if not seen_any:
        issues.append("empty_input")


def is_plain(name: str) -> bool:
    """An uncompressed snapshot file (its byte ranges can be read independently)."""
    name = name.lower()
    return name.endswith(".json") or name.endswith(".jsonl")


def iter_papers(path: Path, limit: int | None = None, prefilter=None) -> Iterator[Paper | Drop]:
    """Records of one snapshot file (plain, .gz or .zst), one by one; see `parse_line`."""
    source = path.name
    issues: list[str] = []
    n = 0
    for block in iter_blocks(path, BLOCK_BYTES, issues):
        for line in block.split(b"\n"):
            if limit is not None and n >= limit:
                return
            item = parse_line(line, source, prefilter)
            if item is not None:
                n += 1
                yield item
    for issue in issues:
        yield Drop(issue, source)
