"""A loopback OAI-PMH server for the harvester tests, serving pages generated here.

`FakeOAI` serves ListRecords in the `arXiv` and `arXivRaw` formats, split into pages joined by
resumption tokens, and can be told to fail (HTTP status + headers, or a dropped connection),
to reject tokens as expired, or to answer with OAI errors. Every request is logged.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

OAI_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            "<responseDate>2024-02-01T00:00:00Z</responseDate>\n"
            '<request verb="ListRecords">http://127.0.0.1/oai</request>\n')
OAI_TAIL = "</OAI-PMH>\n"


def paper_ids(n: int) -> list[str]:
    return [f"2401.{i:05d}" for i in range(1, n + 1)]


def _header(pid: str) -> str:
    return (f"<header><identifier>oai:arXiv.org:{pid}</identifier>"
            "<datestamp>2024-01-15</datestamp><setSpec>physics:hep-th</setSpec></header>")


def arxiv_record(pid: str) -> str:
    return (f"<record>{_header(pid)}<metadata>"
            '<arXiv xmlns="http://arxiv.org/OAI/arXiv/">'
            f"<id>{pid}</id><created>2024-01-02</created>"
            "<authors><author><keyname>Noether</keyname><forenames>Emmy</forenames></author>"
            "<author><keyname>Dirac</keyname><forenames>Paul</forenames></author></authors>"
            f"<title>Symmetry and conservation in toy model {escape(pid)}</title>"
            "<categories>hep-th gr-qc</categories>"
            "<license>http://creativecommons.org/licenses/by/4.0/</license>"
            f"<abstract>We study a toy model ({pid}) &amp; its conserved currents.</abstract>"
            "</arXiv></metadata></record>")


def arxivraw_record(pid: str) -> str:
    return (f"<record>{_header(pid)}<metadata>"
            '<arXivRaw xmlns="http://arxiv.org/OAI/arXivRaw/">'
            f"<id>{pid}</id><submitter>Emmy Noether</submitter>"
            '<version version="v1"><date>Tue, 2 Jan 2024 10:00:00 GMT</date><size>24kb</size></version>'
            f"<title>Symmetry and conservation in toy model {escape(pid)}</title>"
            "<authors>Emmy Noether, Paul Dirac</authors><categories>hep-th gr-qc</categories>"
            "<license>http://creativecommons.org/licenses/by/4.0/</license>"
            f"<abstract>We study a toy model ({pid}) &amp; its conserved currents.</abstract>"
            "</arXivRaw></metadata></record>")


def deleted_record(pid: str) -> str:
    return (f'<record><header status="deleted"><identifier>oai:arXiv.org:{pid}</identifier>'
            "<datestamp>2024-01-15</datestamp></header></record>")


def list_records_page(records: list[str], token: str | None, cursor: int, total: int) -> bytes:
    if token is None:
        tok = f'<resumptionToken cursor="{cursor}" completeListSize="{total}"/>'
    else:
        tok = f'<resumptionToken cursor="{cursor}" completeListSize="{total}">{token}</resumptionToken>'
    return (OAI_HEAD + "<ListRecords>\n" + "\n".join(records) + "\n" + tok + "\n</ListRecords>\n"
            + OAI_TAIL).encode("utf-8")


def error_page(code: str, text: str) -> bytes:
    return (OAI_HEAD + f'<error code="{code}">{escape(text)}</error>\n' + OAI_TAIL).encode("utf-8")


def build_pages(fmt: str, ids: list[str], per_page: int) -> tuple[list[bytes], list[str]]:
    """Pages of `fmt` records and the token that leads to each page after the first."""
    make = {"arXiv": arxiv_record, "arXivRaw": arxivraw_record}[fmt]
    chunks = [ids[i:i + per_page] for i in range(0, len(ids), per_page)]
    tokens = [f"{fmt}-tok-{k}|{len(ids)}" for k in range(1, len(chunks))]
    pages = []
    for k, chunk in enumerate(chunks):
        nxt = tokens[k] if k < len(tokens) else None
        pages.append(list_records_page([make(p) for p in chunk], nxt, k * per_page, len(ids)))
    return pages, tokens


class FakeOAI:
    """The server's behaviour. `faults[key]` (key: "start" or a token) is a list of faults
    answered, in order, before the real page: `(status, headers)` or `"drop"`."""

    def __init__(self, n_records: int = 7, per_page: int = 3):
        self.ids = paper_ids(n_records)
        self.pages: dict[str, list[bytes]] = {}
        self.tokens: dict[str, tuple[str, int]] = {}
        for fmt in ("arXiv", "arXivRaw"):
            pages, toks = build_pages(fmt, self.ids, per_page)
            self.pages[fmt] = pages
            for k, t in enumerate(toks, start=1):
                self.tokens[t] = (fmt, k)
        self.faults: dict[str, list] = {}
        self.expired: set[str] = set()
        self.empty_sets = {"physics:empty"}
        self.bad_sets = {"physics:nope"}
        self.log: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.omit_length = False  # True: no Content-Length, the body ends when the connection closes

    def token_for(self, fmt: str, page_index: int) -> str:
        """The token that fetches page `page_index` (0-based, >= 1) of `fmt`."""
        return next(t for t, v in self.tokens.items() if v == (fmt, page_index))

    def respond(self, q: dict[str, str]) -> tuple[int, dict, bytes | None]:
        key = q.get("resumptionToken", "start")
        with self.lock:
            pending = self.faults.get(key)
            fault = pending.pop(0) if pending else None
        if fault == "drop":
            return 0, {}, None
        if fault is not None:
            status, headers = fault
            return status, headers, b"<html><body>busy</body></html>"
        if q.get("verb") != "ListRecords":
            return 200, {}, error_page("badVerb", "Illegal verb")
        if "resumptionToken" in q:
            tok = q["resumptionToken"]
            if tok in self.expired or tok not in self.tokens or len(q) != 2:
                return 200, {}, error_page("badResumptionToken", f"Token {tok} is invalid or expired")
            fmt, k = self.tokens[tok]
            return 200, {}, self.pages[fmt][k]
        fmt = q.get("metadataPrefix")
        if fmt not in self.pages:
            return 200, {}, error_page("cannotDisseminateFormat", f"Format {fmt} is not supported")
        if q.get("set") in self.bad_sets:
            return 200, {}, error_page("badArgument", f"Invalid set {q['set']}")
        if q.get("set") in self.empty_sets:
            return 200, {}, error_page("noRecordsMatch", "No records match the request")
        return 200, {}, self.pages[fmt][0]


class LoopbackServer:
    """`FakeOAI` behind a ThreadingHTTPServer on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, site: FakeOAI):
        self.site = site

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                parts = urlsplit(handler.path)
                q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                with site.lock:
                    site.log.append(q)
                    site.headers.append(dict(handler.headers))
                if parts.path != "/oai":
                    handler.send_error(404)
                    return
                status, headers, body = site.respond(q)
                if body is None:  # drop the connection without an answer
                    handler.close_connection = True
                    return
                handler.send_response(status)
                handler.send_header("Content-Type", "text/xml; charset=utf-8")
                if not site.omit_length:
                    handler.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    handler.send_header(k, v)
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *a):  # noqa: N805
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/oai"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
