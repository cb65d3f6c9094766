"""Polite, resumable OAI-PMH harvester for arXiv metadata.

`python -m dataset_builders harvest --out raw/oai/hep-th --set physics:hep-th --from 2024-01-01`
issues ListRecords requests, follows resumption tokens until the list ends and saves every
response page verbatim as `page-00001.xml`, `page-00002.xml`, ... in the output folder, so
`python -m dataset_builders build --input raw/oai/hep-th ...` reproduces a build from disk.

Politeness: a User-Agent naming the project (and a contact when given), a minimum interval
between requests (arXiv asks for 3 s), `Retry-After` honoured on 503/429, bounded retries with
backoff for transient failures. Progress: `harvest-state.json` in the output folder records the
request, pages saved and the next resumption token after each page (written atomically), so
rerunning the same command continues where it stopped.

Bounds: a response body larger than `--max-response-mb` (read in a stream, never whole) is
refused; a server that hands out a resumption token it already gave (a loop) or keeps paging
past `--page-limit` pages is stopped with one line; every page saved so far stays resumable.

Library use:

    from dataset_builders.harvest import HarvestParams, harvest
    res = harvest("https://arxiv.org/oai", "raw/oai/hep-th",
                  HarvestParams("arXiv", set="physics:hep-th", from_="2024-01-01"))

Why not `sickle` (0.7), the OAI-PMH client on PyPI: its iterator hands records or whole
responses to the caller but keeps the resumption state to itself, so a page cannot be saved
verbatim together with the token that follows it and resumed after a crash; it reads every
response whole into memory (no size bound); it retries only HTTP status codes, not timeouts or
dropped connections, takes `Retry-After` only as a number of seconds (an HTTP date raises),
sleeps with `time.sleep` (no injectable clock for tests) and needs lxml. What this module adds
on top of `requests` is exactly that: per-page persistence, bounds and polite retries.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import requests

from qwenphysics.core.files import atomic_write

from .readers.oai import OAI_NS, oai_error, parse_page, resumption_token
from .records import InputError

DEFAULT_BASE_URL = "https://arxiv.org/oai"  # since Feb 2025; http://export.arxiv.org/oai2 still answers
FORMATS = ("arXiv", "arXivRaw", "oai_dc")
STATE_FILE = "harvest-state.json"
STATE_VERSION = 1
USER_AGENT = "QwenPhysics-harvest/0.1 (dataset_builders; arXiv metadata for training data)"
PAGE_RE = re.compile(r"^page-\d{5,}\.xml$")
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 64 << 20  # an arXiv page (1,000 records) is 1-3 MB
PAGE_LIMIT = 100_000  # all of arXiv is ~3,000 pages of 1,000 records

# What to fix for each OAI-PMH error code (the server's own text is shown as well).
_OAI_HINTS = {
    "badArgument": "check --set, --from/--until (YYYY-MM-DD) and --format",
    "cannotDisseminateFormat": f"--format must be one the server offers ({', '.join(FORMATS)} on arXiv)",
    "noSetHierarchy": "this server has no sets; drop --set",
    "badVerb": "check --base-url (it should be the OAI-PMH endpoint)",
    "idDoesNotExist": "check the request arguments",
}


class HarvestFailed(Exception):
    """The server kept failing (after retries); pages saved so far are kept and resumable."""

    def __init__(self, message: str, result: HarvestResult):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class HarvestParams:
    """The ListRecords request: metadata format, optional set and date range (YYYY-MM-DD)."""

    metadata_prefix: str = "arXiv"
    set: str | None = None
    from_: str | None = None
    until: str | None = None

    def query(self) -> dict[str, str]:
        q = {"verb": "ListRecords", "metadataPrefix": self.metadata_prefix}
        if self.set:
            q["set"] = self.set
        if self.from_:
            q["from"] = self.from_
        if self.until:
            q["until"] = self.until
        return q

    def to_state(self) -> dict:
        return {"metadataPrefix": self.metadata_prefix, "set": self.set, "from": self.from_,
                "until": self.until}

    @classmethod
    def from_mapping(cls, m: Mapping) -> HarvestParams:
        """From OAI argument names (`metadataPrefix`, `set`, `from`, `until`) or field names."""
        return cls(metadata_prefix=m.get("metadataPrefix", m.get("metadata_prefix", "arXiv")),
                   set=m.get("set"), from_=m.get("from", m.get("from_")), until=m.get("until"))

    def validate(self) -> None:
        if not self.metadata_prefix:
            raise InputError("--format is empty; use one of " + ", ".join(FORMATS))
        if self.set is not None and (not self.set.strip() or any(c.isspace() for c in self.set)):
            raise InputError(f"--set {self.set!r} is not a set spec (e.g. physics:hep-th, math, cs)")
        dates = {}
        for name, v in (("--from", self.from_), ("--until", self.until)):
            if v is None:
                continue
            try:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                    raise ValueError
                dates[name] = date.fromisoformat(v)
            except ValueError:
                raise InputError(f"{name} {v!r} is not a date; use YYYY-MM-DD") from None
        if len(dates) == 2 and dates["--from"] > dates["--until"]:
            raise InputError(f"--from {self.from_} is after --until {self.until}")


@dataclass
class HarvestResult:
    pages: int  # pages saved in the folder (all runs)
    records: int  # records in those pages (deleted-record headers included)
    done: bool  # the list ended (or nothing matched)
    fetched: int = 0  # pages fetched by this run
    complete_list_size: int | None = None
    already_done: bool = False  # the folder already held a complete harvest; nothing was fetched


def user_agent(contact: str | None = None) -> str:
    if contact:
        return f"{USER_AGENT[:-1]}; contact: {contact})"
    return USER_AGENT


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def _atomic_write(path: Path, data: bytes) -> None:
    """Durable, and hidden while partial (`.<name>.part`, cleared when a harvest resumes)."""
    atomic_write(path, data, fsync=True, tmp=path.with_name(f".{path.name}.part"))


def _one_line(s: str) -> str:
    return " ".join(s.split())


class _TooLarge(Exception):
    pass


def _read_capped(resp, cap: int) -> bytes:
    """The body of a streamed response, refused past `cap` bytes (never held whole)."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _TooLarge
    chunks, n = [], 0
    for chunk in resp.iter_content(1 << 16):
        n += len(chunk)
        if n > cap:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _token_key(token: str) -> str:
    """What the state file remembers of a resumption token (tokens can be long)."""
    return hashlib.blake2b(token.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


class _Pacer:
    """Keeps at least `interval` seconds between request starts (on the injected clock)."""

    def __init__(self, interval: float, sleep: Callable[[float], None], clock: Callable[[], float]):
        self.interval, self.sleep, self.clock = interval, sleep, clock
        self.last: float | None = None

    def wait(self) -> None:
        if self.last is not None:
            gap = self.interval - (self.clock() - self.last)
            if gap > 0:
                self.sleep(gap)
        self.last = self.clock()


class _Folder:
    """The output folder: page files, the state file, and the checks before (re)starting."""

    def __init__(self, out: Path):
        self.out = out
        self.state_path = out / STATE_FILE

    def ours(self, p: Path) -> bool:
        return (PAGE_RE.match(p.name) is not None or p.name == STATE_FILE
                or (p.name.startswith(".") and p.name.endswith(".part")))

    def clear(self) -> None:
        for p in self.out.iterdir():
            if p.is_file() and self.ours(p):
                p.unlink()

    def clean_partials(self) -> None:
        for p in self.out.glob(".*.part"):
            p.unlink(missing_ok=True)

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
                raise ValueError
            return state
        except (OSError, ValueError):
            raise InputError(f"{self.state_path} is unreadable; start over with a fresh --out "
                             "or rerun with --restart") from None

    def save_state(self, state: dict) -> None:
        _atomic_write(self.state_path, (json.dumps(state, indent=2) + "\n").encode("utf-8"))

    def page_path(self, n: int) -> Path:
        return self.out / f"page-{n:05d}.xml"


def _count_records(root: ET.Element) -> int:
    return len(root.findall(f"{{{OAI_NS}}}ListRecords/{{{OAI_NS}}}record"))


def _list_size(root: ET.Element) -> int | None:
    tok = root.find(f"{{{OAI_NS}}}ListRecords/{{{OAI_NS}}}resumptionToken")
    if tok is None:
        return None
    try:
        return int(tok.get("completeListSize", ""))
    except ValueError:
        return None


def harvest(base_url: str, out: str | os.PathLike, params: HarvestParams | Mapping, *,
            session=None, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
            min_interval: float = 3.0, max_tries: int = 5, backoff: float = 5.0,
            max_wait: float = 600.0, timeout: float = 120.0, contact: str | None = None,
            restart: bool = False, max_pages: int | None = None,
            max_response_bytes: int = MAX_RESPONSE_BYTES, page_limit: int = PAGE_LIMIT,
            log: Callable[[str], None] | None = None) -> HarvestResult:
    """Harvest ListRecords pages from `base_url` into `out`, resuming from its state file.

    `sleep`/`clock`/`wall` are injectable (tests); `wall` turns an HTTP-date `Retry-After`
    into seconds. Each request is tried `max_tries` times; waits (Retry-After or backoff that
    doubles from `backoff`) are capped at `max_wait`. `max_pages` stops (resumably) after that
    many pages in this run. A response over `max_response_bytes`, a resumption token seen
    before, or more than `page_limit` pages in the folder stop the harvest (`HarvestFailed`).
    Raises `InputError` for unusable requests (OAI errors, a folder holding something else)
    and `HarvestFailed` when the server keeps failing.
    """

    if not isinstance(params, HarvestParams):
        params = HarvestParams.from_mapping(params)
    params.validate()
    if max_tries < 1:
        raise InputError("--max-tries must be at least 1")
    if min_interval < 0:
        raise InputError("--min-interval must not be negative")
    if max_response_bytes < 1 or page_limit < 1:
        raise InputError("--max-response-mb and --page-limit must be positive")
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    folder = _Folder(out)
    identity = {"base_url": base_url, "params": params.to_state()}

    if restart:
        folder.clear()
    state = folder.load_state()
    if (state is not None and state.get("pages") == 0
            and {"base_url": state.get("base_url"), "params": state.get("params")} != identity
            and not any(PAGE_RE.match(p.name) for p in out.iterdir())):
        state = None  # nothing saved under the old request (e.g. it was refused): start afresh
        folder.state_path.unlink()
    if state is None:
        stray = sorted(p.name for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".part")))
        if stray:
            raise InputError(f"--out {out} is not empty ({stray[0]}{' ...' if len(stray) > 1 else ''}) "
                             "and holds no harvest; give a fresh folder"
                             + (" or rerun with --restart" if all(folder.ours(out / s) for s in stray) else ""))
        state = {"version": STATE_VERSION, **identity, "pages": 0, "records": 0,
                 "next_token": None, "done": False, "complete_list_size": None}
        folder.save_state(state)
    elif {"base_url": state.get("base_url"), "params": state.get("params")} != identity:
        was = state.get("params") or {}
        desc = " ".join(f"{k}={v}" for k, v in was.items() if v) + f" from {state.get('base_url')}"
        raise InputError(f"--out {out} holds a harvest of different parameters ({desc}); "
                         "use the same arguments to resume, a fresh --out, or --restart")
    folder.clean_partials()

    def result(fetched: int, already: bool = False) -> HarvestResult:
        return HarvestResult(pages=state["pages"], records=state["records"], done=state["done"],
                             fetched=fetched, complete_list_size=state.get("complete_list_size"),
                             already_done=already)

    if state["done"]:
        log(f"{out} already holds a complete harvest ({state['pages']} pages, "
            f"{state['records']:,} records); nothing to do (--restart fetches it again)")
        return result(0, already=True)

    own_session = session is None
    if own_session:
        session = requests.Session()
    headers = {"User-Agent": user_agent(contact)}
    if contact and "@" in contact:
        headers["From"] = contact
    pacer = _Pacer(min_interval, sleep, clock)
    fetched = 0
    resumed_token = state["next_token"]
    if resumed_token:
        log(f"resuming {out} at page {state['pages'] + 1} from the saved resumption token")

    def fetch(query: dict[str, str], page_no: int) -> tuple[bytes, ET.Element]:
        """One page: retries transient failures; returns the body and its parsed root."""
        last = ""
        for attempt in range(1, max_tries + 1):
            wait: float | None = None
            pacer.wait()
            try:
                resp = session.get(base_url, params=query, headers=headers, timeout=timeout, stream=True)
                try:
                    body = _read_capped(resp, max_response_bytes)
                finally:
                    resp.close()
            except _TooLarge:
                raise HarvestFailed(
                    f"page {page_no}: the response from {base_url} is larger than "
                    f"{max_response_bytes / (1 << 20):g} MB; is --base-url an OAI-PMH endpoint? "
                    f"(raise --max-response-mb if it is); {state['pages']} pages are saved in {out}",
                    result(fetched)) from None
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {_one_line(str(e))[:200]}"
            else:
                if resp.status_code == 200:
                    try:
                        return body, parse_page(body)
                    except ET.ParseError as e:
                        last = f"response was not well-formed XML ({e})"
                elif resp.status_code in RETRYABLE_STATUS:
                    last = f"HTTP {resp.status_code}"
                    wait = retry_after_seconds(resp.headers.get("Retry-After"), wall())
                    if wait is not None:
                        last += f" (Retry-After {resp.headers.get('Retry-After')})"
                else:
                    try:  # some servers send OAI errors with a 4xx status
                        root = parse_page(body)
                        if oai_error(root):
                            return body, root
                    except ET.ParseError:
                        pass
                    raise InputError(f"HTTP {resp.status_code} from {resp.url}; check --base-url "
                                     "(the OAI-PMH endpoint) and the request arguments")
            if attempt == max_tries:
                break
            if wait is None:
                wait = backoff * 2 ** (attempt - 1)
            wait = min(wait, max_wait)
            log(f"page {page_no}: {last}; retrying in {wait:g} s (try {attempt + 1} of {max_tries})")
            if wait > 0:
                sleep(wait)
        raise HarvestFailed(
            f"gave up on page {page_no} after {max_tries} tries ({last}); {state['pages']} pages "
            f"are saved in {out}; rerun the same command to resume", result(fetched))

    try:
        while True:
            if max_pages is not None and fetched >= max_pages:
                log(f"stopped after {fetched} pages (--max-pages); rerun the same command to resume")
                return result(fetched)
            page_no = state["pages"] + 1
            token = state["next_token"]
            query = ({"verb": "ListRecords", "resumptionToken": token} if token else params.query())
            body, root = fetch(query, page_no)
            err = oai_error(root)
            if err is not None:
                code, text = err
                if code == "noRecordsMatch":
                    state["done"] = True
                    folder.save_state(state)
                    log("no records match this request; nothing to save" if page_no == 1 else
                        f"the list ended (noRecordsMatch) after {state['pages']} pages")
                    return result(fetched)
                if code == "badResumptionToken" and token:
                    when = "saved" if token == resumed_token else "latest"
                    raise InputError(f"the server rejected the {when} resumption token (badResumptionToken: "
                                     f"{_one_line(text)[:160]}); tokens expire, so start over with a "
                                     f"fresh --out or rerun with --restart")
                hint = _OAI_HINTS.get(code, "check the request arguments")
                raise InputError(f"OAI-PMH error {code} from {base_url}: {_one_line(text)[:200]}; {hint}")
            if root.tag != f"{{{OAI_NS}}}OAI-PMH" or root.find(f"{{{OAI_NS}}}ListRecords") is None:
                raise InputError(f"the response from {base_url} is not an OAI-PMH ListRecords page "
                                 f"(root <{root.tag}>); check --base-url")
            n = _count_records(root)
            size = _list_size(root)
            nxt = resumption_token(root)
            seen = state.setdefault("seen_tokens", [])
            if nxt is not None and (_token_key(nxt) in seen or nxt == token):
                raise HarvestFailed(
                    f"page {page_no}: the server sent a resumption token it had already sent (a loop); "
                    f"stopped with {state['pages']} pages saved in {out}; check --base-url or report it "
                    "to the server's operators", result(fetched))
            if page_no > page_limit:
                raise HarvestFailed(
                    f"the harvest reached {page_limit:,} pages (--page-limit) without the list ending; "
                    f"{state['pages']} pages are saved in {out}; raise --page-limit to go on", result(fetched))
            _atomic_write(folder.page_path(page_no), body)
            fetched += 1
            if token:
                seen.append(_token_key(token))
            state.update(pages=page_no, records=state["records"] + n, next_token=nxt, done=nxt is None)
            if size is not None:
                state["complete_list_size"] = size
            folder.save_state(state)
            total = state.get("complete_list_size")
            log(f"page {page_no}: {n:,} records, {state['records']:,} so far"
                + (f" of {total:,}" if total is not None else ""))
            if state["done"]:
                log(f"harvest complete: {state['pages']} pages, {state['records']:,} records in {out}")
                return result(fetched)
    finally:
        if own_session:
            session.close()


FORMATTER = argparse.RawDescriptionHelpFormatter
EPILOG = """Pages are saved verbatim as page-00001.xml, ... with harvest-state.json beside them; rerun
the same command to resume. Build from the folder with:
  python -m dataset_builders build --spec abstracts-chat --input raw/oai/hep-th --out data/hep-th
(the build reads the arXiv and arXivRaw formats; oai_dc pages are saved but not read).

example:
  python -m dataset_builders harvest --out raw/oai/hep-th --set physics:hep-th \\
      --from 2024-01-01 --until 2024-01-31 --format arXiv --contact you@example.org
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "harvest", help="harvest arXiv metadata over OAI-PMH into a folder of pages (resumable)",
        description="Harvest arXiv metadata with OAI-PMH ListRecords, politely and resumably.",
        formatter_class=FORMATTER, epilog=EPILOG)
    p.add_argument("--out", required=True, type=Path, help="folder for page-NNNNN.xml and harvest-state.json")
    p.add_argument("--set", default=None, help="OAI set, e.g. physics:hep-th, physics, math (default: all)")
    p.add_argument("--from", dest="from_", default=None, metavar="YYYY-MM-DD",
                   help="records updated on or after this date")
    p.add_argument("--until", default=None, metavar="YYYY-MM-DD", help="records updated on or before this date")
    p.add_argument("--format", default="arXiv", choices=FORMATS, help="metadata format (default arXiv)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help=f"OAI-PMH endpoint (default {DEFAULT_BASE_URL}; http://export.arxiv.org/oai2 also answers)")
    p.add_argument("--contact", default=None, metavar="EMAIL", help="contact named in the User-Agent")
    p.add_argument("--min-interval", type=float, default=3.0, metavar="S",
                   help="minimum seconds between requests (default 3, as arXiv asks)")
    p.add_argument("--max-tries", type=int, default=5, metavar="N",
                   help="tries per page before giving up (default 5)")
    p.add_argument("--max-wait", type=float, default=600.0, metavar="S",
                   help="cap on one Retry-After or backoff wait (default 600)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per-request timeout (default 120)")
    p.add_argument("--max-pages", type=int, default=None, metavar="N",
                   help="stop after N pages this run (resume later)")
    p.add_argument("--restart", action="store_true",
                   help="discard the folder's pages and state and start over")
    p.add_argument("--max-response-mb", type=float, default=MAX_RESPONSE_BYTES / (1 << 20), metavar="MB",
                   help=f"refuse a response larger than this (default {MAX_RESPONSE_BYTES >> 20})")
    p.add_argument("--page-limit", type=int, default=PAGE_LIMIT, metavar="N",
                   help=f"stop when the folder would hold more than N pages (default {PAGE_LIMIT:,})")
    p.set_defaults(func=cmd_harvest)
    return p


def cmd_harvest(args) -> int:
    params = HarvestParams(args.format, set=args.set, from_=args.from_, until=args.until)
    try:
        harvest(args.base_url, args.out, params, min_interval=args.min_interval,
                max_tries=args.max_tries, max_wait=args.max_wait, timeout=args.timeout,
                contact=args.contact, restart=args.restart, max_pages=args.max_pages,
                max_response_bytes=int(args.max_response_mb * (1 << 20)), page_limit=args.page_limit)
    except HarvestFailed as e:
        print(f"dataset_builders: error: {e}", file=sys.stderr)
        return 1
    return 0
