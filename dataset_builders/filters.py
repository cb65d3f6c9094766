"""Filters: each takes a Paper and returns None (keep) or the reason it is dropped.

Built from a spec's `filters:` block; every reason is counted in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import taxonomy
from .records import InputError, Paper

# License presets. Papers on arXiv carry one of these URLs, or none (old papers, which fall
# under the arXiv non-exclusive licence: no reuse rights).
CC_BY = ("http://creativecommons.org/licenses/by/4.0/", "http://creativecommons.org/licenses/by/3.0/")
CC_BY_SA = ("http://creativecommons.org/licenses/by-sa/4.0/",)
CC0 = ("http://creativecommons.org/publicdomain/zero/1.0/",)
CC_BY_NC_SA = ("http://creativecommons.org/licenses/by-nc-sa/4.0/", "http://creativecommons.org/licenses/by-nc-sa/3.0/")
CC_BY_NC_ND = ("http://creativecommons.org/licenses/by-nc-nd/4.0/",)
ARXIV_NONEXCLUSIVE = ("http://arxiv.org/licenses/nonexclusive-distrib/1.0/",)
LICENSE_PRESETS: dict[str, frozenset[str] | None] = {
    "any": None,
    "redistributable": frozenset(CC_BY + CC_BY_SA + CC0),
    "open": frozenset(CC_BY + CC_BY_SA + CC0 + CC_BY_NC_SA + CC_BY_NC_ND),
}


def _norm_license(url: str | None) -> str | None:
    if url is None:
        return None
    u = url.strip().replace("https://", "http://")
    return u if u.endswith("/") else u + "/"


@dataclass
class FilterSpec:
    categories: str | list[str] = "physics"  # "physics", "any", or a list of categories/archives
    primary_only: bool = False
    include_archives: list[str] = field(default_factory=list)
    exclude_archives: list[str] = field(default_factory=list)
    date_from: str | None = None  # inclusive, YYYY-MM-DD, on the first version's date
    date_to: str | None = None  # inclusive
    licenses: str | list[str] = "any"  # preset name or list of licence URLs
    drop_withdrawn: bool = True
    min_title_chars: int = 5
    min_abstract_chars: int = 100
    max_abstract_chars: int = 6000

    @classmethod
    def from_dict(cls, d: dict | None, where: str) -> FilterSpec:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"{where}: unknown filter key(s) {unknown}; known: {sorted(known)}")
        for k in ("date_from", "date_to"):
            if d.get(k) is not None:
                d[k] = str(d[k])
        return cls(**d)


def category_check(spec: FilterSpec) -> Callable[[list[str]], str | None] | None:
    """categories (primary first) -> drop reason or None; None when every category passes."""
    if spec.categories == "any":
        return None
    wanted = taxonomy.ALL_PHYSICS if spec.categories == "physics" else frozenset(spec.categories)
    archives = frozenset(c for c in wanted if "." not in c)

    def match(c: str) -> bool:
        return c in wanted or taxonomy.archive_of(c) in archives

    if spec.primary_only:
        return lambda cats: None if cats and match(cats[0]) else "not_physics_primary"
    return lambda cats: None if any(map(match, cats)) else "not_physics"


def build(spec: FilterSpec) -> list[tuple[str, Callable[[Paper], str | None]]]:
    """The ordered list of (name, check) for a spec. Cheap checks first."""
    checks: list[tuple[str, Callable[[Paper], str | None]]] = []

    cat_check = category_check(spec)
    if cat_check is not None:
        checks.append(("category", lambda p: cat_check(p.categories)))

    if spec.include_archives:
        inc = frozenset(spec.include_archives)
        checks.append(("include_archives", lambda p: None if taxonomy.archive_of(p.categories[0]) in inc
                       else "archive_not_included"))
    if spec.exclude_archives:
        exc = frozenset(spec.exclude_archives)
        checks.append(("exclude_archives", lambda p: "archive_excluded" if taxonomy.archive_of(p.categories[0]) in exc
                       else None))

    if spec.date_from or spec.date_to:
        lo, hi = spec.date_from or "0000", spec.date_to or "9999"

        def date_check(p: Paper) -> str | None:
            if p.created is None:
                return "no_date"
            if p.created < lo:
                return "before_date_from"
            if p.created[: len(hi)] > hi:
                return "after_date_to"
            return None

        checks.append(("date", date_check))

    allowed: frozenset[str | None] | None  # normalised licence URLs; None: any licence
    if isinstance(spec.licenses, str):
        if spec.licenses not in LICENSE_PRESETS:
            raise InputError(f"unknown licence preset '{spec.licenses}'; use one of {sorted(LICENSE_PRESETS)} "
                             "or a list of licence URLs")
        allowed = LICENSE_PRESETS[spec.licenses]
    else:
        allowed = frozenset(_norm_license(u) for u in spec.licenses)
    if allowed is not None:
        checks.append(("license", lambda p: None if _norm_license(p.license) in allowed else "license_not_allowed"))

    if spec.drop_withdrawn:
        checks.append(("withdrawn", lambda p: "withdrawn" if p.withdrawn else None))

    mt, ma, xa = spec.min_title_chars, spec.min_abstract_chars, spec.max_abstract_chars

    def length(p: Paper) -> str | None:
        if len(p.title.strip()) < mt:
            return "title_too_short"
        n = len(p.abstract.strip())
        if n < ma:
            return "abstract_too_short"
        if n > xa:
            return "abstract_too_long"
        return None

    checks.append(("length", length))
    return checks


def first_failure(checks: list[Callable[[Paper], str | None]], paper: Paper) -> str | None:
    """The drop reason of the first check in `checks` that rejects `paper`, or None."""
    for check in checks:
        reason = check(paper)
        if reason:
            return reason
    return None
