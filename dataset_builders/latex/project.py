"""A LaTeX project in memory: decoding, main-file detection, include resolution."""

from __future__ import annotations

import posixpath
import re

from .model import LatexError, Limits
from .tex import read_group, strip_comment_envs, strip_comments

# Files that can be a main document
MAIN_EXTS = frozenset({".tex", ".ltx", ".latex", ""})
# Never decoded: figures, archives, fonts, documents
BINARY_EXTS = frozenset(
    ".pdf .png .jpg .jpeg .gif .bmp .tif .tiff .eps .ps .epsf .epsi .svg .webp .ico .mp4 .mov "
    ".avi .gz .tgz .zip .tar .bz2 .xz .zst .7z .rar .ttf .otf .pfb .tfm .vf .dvi .xdv .fig "
    ".pdf_tex .pyc .o .so .dll .exe .class .jar .npy .npz .h5 .hdf5 .fits .mat .pkl .xls "
    ".xlsx .doc .docx .ppt .pptx .odt .wav .mp3 .ogg .dat .bin".split()
)
_BINARY_MAGIC = (
    b"%PDF",
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x28\xb5\x2f\xfd",
    b"%!PS",
    b"II*\x00",
    b"MM\x00*",
    b"\x7fELF",
)
_BINARY_BYTES = bytes(range(0, 9)) + bytes(range(0x0E, 0x1B)) + bytes(range(0x1C, 0x20))
# control bytes dropped before decoding (never part of a UTF-8 multi-byte sequence)
_SCRUB_BYTES = bytes(range(0, 9)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f"

_DOCCLASS = re.compile(r"\\document(?:class|style)(?![A-Za-z@])")
_BEGIN_DOC = re.compile(r"\\begin\s*\{document\}")
_INCLUDE = re.compile(
    r"\\(input|include|subfile|import|subimport|inputfrom|subinputfrom|includefrom|"
    r"subincludefrom)(?![A-Za-z@])\*?"
)
_BARE_NAME = re.compile(r"[ \t]*([^\s{}\\%]+)")
_PACKAGE = re.compile(r"\\(?:usepackage|RequirePackage)\s*(?:\[[^\]]*\]\s*)?\{([^{}]*)\}")
_PREFERRED_NAMES = ("main.tex", "ms.tex", "paper.tex", "manuscript.tex", "article.tex")


def ext_of(path: str) -> str:
    base = posixpath.basename(path)
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def normalize_path(path: str) -> str | None:
    """A safe relative POSIX path, or None for absolute paths and '..' escapes."""
    p = path.replace("\\", "/")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        return None
    p = posixpath.normpath(p)
    if p in (".", "") or p.startswith("../") or p == "..":
        return None
    return p


def looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head or head.startswith(_BINARY_MAGIC):
        return True
    if not head:
        return False
    controls = len(head) - len(head.translate(None, _BINARY_BYTES))
    return controls > len(head) // 20


def decode(data: bytes) -> str:
    """Text of a source file: control characters dropped, newlines normalised."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    data = data.translate(None, _SCRUB_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class Project:
    def __init__(self, files: dict[str, bytes], limits: Limits, stats: dict):
        self.limits = limits
        self.stats = stats
        self.raw: dict[str, str] = {}  # path -> decoded, scrubbed text
        self._clean: dict[str, str] = {}
        self.total_chars = 0
        tex_seen = 0
        binary = 0
        unsafe = 0
        input_bytes = 0
        for name in sorted(files):
            path = normalize_path(name)
            if path is None:
                unsafe += 1
                continue
            ext = ext_of(path)
            data = files[name]
            if ext in MAIN_EXTS:
                tex_seen += 1
            if ext in BINARY_EXTS:
                continue
            if looks_binary(data):
                binary += 1
                continue
            if path in self.raw:
                continue
            self.raw[path] = decode(data)
            if ext in MAIN_EXTS:
                input_bytes += len(data)
        stats["binary_files_ignored"] = binary
        stats["unsafe_paths_ignored"] = unsafe
        stats["input_bytes"] = input_bytes
        self.candidates = sorted(p for p in self.raw if ext_of(p) in MAIN_EXTS)
        if not self.candidates:
            raise LatexError("binary" if tex_seen else "no_tex_source")

    def text(self, path: str) -> str:
        """Comment-free text of one file (cached)."""
        t = self._clean.get(path)
        if t is None:
            t, k = strip_comment_envs(self.raw[path])
            t, n = strip_comments(t)
            self.stats["comments_removed"] = self.stats.get("comments_removed", 0) + n
            self.stats["comment_envs_removed"] = self.stats.get("comment_envs_removed", 0) + k
            self._clean[path] = t
        return t

    # ------------------------------------------------------------------ main file

    def find_main(self) -> str:
        included: set[str] = set()
        scored = []
        if len(self.candidates) > 1:  # a single candidate needs no ranking by inclusion
            for path in self.candidates:
                t = self.text(path)
                for target in self._include_targets(path, t):
                    included.add(target)
        for path in self.candidates:
            t = self.text(path)
            has_class = _DOCCLASS.search(t) is not None
            has_begin = _BEGIN_DOC.search(t) is not None
            if not (has_class or has_begin):
                continue
            scored.append(
                (
                    not (has_class and has_begin),  # complete documents first
                    not has_class,
                    path in included,  # files \input by others last
                    path.count("/"),  # shallow first
                    posixpath.basename(path) not in _PREFERRED_NAMES,
                    -len(t),  # then the largest
                    path,  # deterministic tie-break
                )
            )
        if not scored:
            raise LatexError("no_main_file")
        scored.sort()
        return scored[0][-1]

    def _include_targets(self, path: str, text: str):
        for m in _INCLUDE.finditer(text):
            names, _ = self._include_names(m, text)
            if names is None:
                continue
            target = self._resolve(path, *names)
            if target is not None:
                yield target

    def _include_names(self, m: re.Match, text: str) -> tuple[tuple | None, int]:
        """((dir or None, name), end) for the include command matched by m."""

        cmd = m.group(1)
        i = m.end()
        if cmd in (
            "import",
            "subimport",
            "inputfrom",
            "subinputfrom",
            "includefrom",
            "subincludefrom",
        ):
            g1 = read_group(text, i)
            if g1 is None:
                return None, i
            g2 = read_group(text, g1[1])
            if g2 is None:
                return None, g1[1]
            return (g1[0].strip(), g2[0].strip()), g2[1]
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            g = read_group(text, j)
            if g is None:
                return None, i
            return (None, g[0].strip()), g[1]
        if cmd == "input":  # TeX syntax: \input file
            b = _BARE_NAME.match(text, i)
            if b:
                return (None, b.group(1)), b.end()
        return None, i

    def _resolve(self, includer: str, directory: str | None, name: str) -> str | None:
        name = name.strip().strip('"').strip()
        if not name or "\\" in name:
            return None
        bases = []
        here = posixpath.dirname(includer)
        if directory is not None:
            bases = [posixpath.join(here, directory), directory]
        else:
            bases = ["", here] if here else [""]
        for base in bases:
            for cand in (name, name + ".tex"):
                p = normalize_path(posixpath.join(base, cand)) if base else normalize_path(cand)
                if p is not None and p in self.raw and ext_of(p) not in (".sty", ".cls"):
                    return p
        return None

    # ------------------------------------------------------------------ includes

    def resolve(self, main: str) -> str:
        """The main file with every reachable include spliced in (comment-free)."""
        self.stats["main_file"] = main
        for k in ("includes_resolved", "includes_missing", "include_cycles", "includes_too_deep"):
            self.stats.setdefault(k, 0)
        self.total_chars = 0
        return self._splice(main, 0, [main])

    def _splice(self, path: str, depth: int, stack: list[str]) -> str:
        text = self.text(path)
        self.total_chars += len(text)
        if self.total_chars > self.limits.max_text_chars:
            raise LatexError("too_large", "text after includes exceeds max_text_chars")
        if "\\in" not in text and "\\sub" not in text and "\\im" not in text:
            return text
        out: list[str] = []
        pos = 0
        for m in _INCLUDE.finditer(text):
            if m.start() < pos:
                continue
            names, end = self._include_names(m, text)
            if names is None:
                continue
            out.append(text[pos : m.start()])
            pos = end
            target = self._resolve(path, *names)
            if target is None:
                self.stats["includes_missing"] += 1
                continue
            if target in stack:
                self.stats["include_cycles"] += 1
                continue
            if depth + 1 > self.limits.include_depth:
                self.stats["includes_too_deep"] += 1
                continue
            self.stats["includes_resolved"] += 1
            stack.append(target)
            out.append("\n" + self._splice(target, depth + 1, stack) + "\n")
            stack.pop()
        out.append(text[pos:])
        return "".join(out)

    def local_packages(self, preamble: str) -> list[str]:
        """Comment-free text of project-local ``.sty`` files loaded by the preamble."""
        found = []
        for m in _PACKAGE.finditer(preamble):
            for name in m.group(1).split(","):
                name = name.strip()
                if not name:
                    continue
                p = normalize_path(name + ".sty")
                if p is not None and p in self.raw:
                    found.append(p)
        self.stats["local_packages"] = len(found)
        return [self.text(p) for p in dict.fromkeys(found)]
