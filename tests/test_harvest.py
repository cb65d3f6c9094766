"""The OAI-PMH harvester against a loopback server serving generated arXiv / arXivRaw pages.

No real sleeping: the harvester's sleep and clock are a fake whose time advances only by the
sleeps requested, so the waits it asks for can be asserted.
"""

from __future__ import annotations

import argparse
import email.utils
import json

import pytest
import requests

from dataset_builders import harvest as hv
from dataset_builders.readers import iter_input
from dataset_builders.records import InputError, Paper

PARAMS = hv.HarvestParams("arXiv", set="physics:hep-th", from_="2024-01-01", until="2024-01-31")


class FakeTime:
    """Injected clock/sleep: time moves only when the harvester sleeps."""

    def __init__(self):
        self.t = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.sleeps.append(s)
        self.t += s


class StampedSession(requests.Session):
    """Records the fake time at which each request starts."""

    def __init__(self, ft: FakeTime):
        super().__init__()
        self.ft, self.stamps = ft, []

    def get(self, *a, **kw):
        self.stamps.append(self.ft.t)
        return super().get(*a, **kw)


@pytest.fixture
def ft():
    return FakeTime()


def run(server, out, params=PARAMS, ft=None, lines=None, **kw):
    ft = ft or FakeTime()
    kw.setdefault("min_interval", 3.0)
    kw.setdefault("timeout", 5.0)
    log = lines.append if lines is not None else (lambda m: None)
    return hv.harvest(server.url, out, params, sleep=ft.sleep, clock=ft.clock, log=log, **kw)


@pytest.mark.parametrize("fmt", ["arXiv", "arXivRaw"])
def test_full_harvest_saves_pages_that_build(server, site, tmp_path, fmt):
    out = tmp_path / "hep-th"
    lines: list[str] = []
    params = hv.HarvestParams(fmt, set="physics:hep-th", from_="2024-01-01", until="2024-01-31")
    res = run(server, out, params, lines=lines, contact="lab@example.org")
    assert (res.pages, res.records, res.done, res.fetched, res.complete_list_size) == (3, 7, True, 3, 7)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["harvest-state.json", "page-00001.xml", "page-00002.xml", "page-00003.xml"]
    for k in range(3):  # verbatim
        assert (out / f"page-{k + 1:05d}.xml").read_bytes() == site.pages[fmt][k]
    state = json.loads((out / "harvest-state.json").read_text())
    assert state["done"] and state["pages"] == 3 and state["next_token"] is None
    assert state["params"] == {"metadataPrefix": fmt, "set": "physics:hep-th",
                               "from": "2024-01-01", "until": "2024-01-31"}
    # the request sequence: the full request first, then the tokens alone
    assert site.log[0] == {"verb": "ListRecords", "metadataPrefix": fmt, "set": "physics:hep-th",
                           "from": "2024-01-01", "until": "2024-01-31"}
    assert site.log[1:] == [{"verb": "ListRecords", "resumptionToken": site.token_for(fmt, k)} for k in (1, 2)]
    ua = site.headers[0]["User-Agent"]
    assert "QwenPhysics" in ua and "lab@example.org" in ua
    assert site.headers[0]["From"] == "lab@example.org"
    # progress: one line per page, with the list size
    page_lines = [ln for ln in lines if ln.startswith("page ")]
    assert page_lines == ["page 1: 3 records, 3 so far of 7", "page 2: 3 records, 6 so far of 7",
                          "page 3: 1 records, 7 so far of 7"]
    # the folder builds through the existing reader
    items = list(iter_input(str(out)))
    assert all(isinstance(x, Paper) for x in items)
    assert [p.id for p in items] == site.ids
    assert items[0].categories == ["hep-th", "gr-qc"] and items[0].created == "2024-01-02"
    assert "Emmy Noether" in items[0].authors


def test_dict_params_and_default_user_agent(server, site, tmp_path):
    res = run(server, tmp_path / "o", {"metadataPrefix": "arXivRaw", "set": "physics:hep-th"})
    assert res.done and res.records == 7
    assert site.log[0] == {"verb": "ListRecords", "metadataPrefix": "arXivRaw", "set": "physics:hep-th"}
    assert site.headers[0]["User-Agent"] == hv.USER_AGENT and "From" not in site.headers[0]


def test_503_retry_after_seconds_is_honoured(server, site, tmp_path, ft):
    site.faults["start"] = [(503, {"Retry-After": "7"})]
    lines: list[str] = []
    res = run(server, tmp_path / "o", ft=ft, lines=lines)
    assert res.done and res.pages == 3
    assert ft.sleeps[0] == 7
    assert [q.get("resumptionToken", "start") for q in site.log][:2] == ["start", "start"]
    assert any("HTTP 503" in ln and "retrying in 7 s" in ln for ln in lines)


def test_503_retry_after_http_date_and_cap(server, site, tmp_path, ft):
    now = 1_700_000_000.0
    site.faults["start"] = [(503, {"Retry-After": email.utils.formatdate(now + 12, usegmt=True)}),
                            (503, {"Retry-After": "99999"})]
    res = run(server, tmp_path / "o", ft=ft, wall=lambda: now, max_wait=60)
    assert res.done
    assert ft.sleeps[:2] == [12, 60]


def test_transient_failures_back_off_then_succeed(server, site, tmp_path, ft):
    tok = site.token_for("arXiv", 1)
    site.faults[tok] = ["drop", (500, {}), (502, {})]
    res = run(server, tmp_path / "o", ft=ft, backoff=5)
    assert res.done and res.records == 7
    # min-interval before page 2, then backoff 5, 10, 20, then min-interval before page 3
    assert ft.sleeps == [3, 5, 10, 20, 3]


def test_interrupted_harvest_resumes_from_saved_token(server, site, tmp_path, ft):
    out = tmp_path / "o"
    tok2 = site.token_for("arXiv", 2)
    site.faults[tok2] = [(500, {})] * 3
    with pytest.raises(hv.HarvestFailed) as ei:
        run(server, out, ft=ft, max_tries=3)
    msg = str(ei.value)
    assert "\n" not in msg and "page 3" in msg and "2 pages" in msg and "resume" in msg
    assert ei.value.result.pages == 2 and not ei.value.result.done
    state = json.loads((out / "harvest-state.json").read_text())
    assert state["pages"] == 2 and state["next_token"] == tok2 and not state["done"]
    assert sorted(p.name for p in out.glob("page-*.xml")) == ["page-00001.xml", "page-00002.xml"]
    before = [(out / f"page-0000{k}.xml").stat().st_mtime_ns for k in (1, 2)]

    site.log.clear()
    lines: list[str] = []
    res = run(server, out, ft=ft, lines=lines)
    assert (res.pages, res.records, res.done, res.fetched) == (3, 7, True, 1)
    assert site.log == [{"verb": "ListRecords", "resumptionToken": tok2}]  # pages 1-2 not re-fetched
    assert [(out / f"page-0000{k}.xml").stat().st_mtime_ns for k in (1, 2)] == before
    assert any("resuming" in ln and "page 3" in ln for ln in lines)
    assert [p.id for p in iter_input(str(out))] == site.ids


def test_max_pages_stops_resumably(server, site, tmp_path):
    out = tmp_path / "o"
    res = run(server, out, max_pages=1)
    assert (res.pages, res.done) == (1, False)
    res = run(server, out)
    assert (res.pages, res.records, res.done, res.fetched) == (3, 7, True, 2)
    assert len(site.log) == 3


def test_completed_harvest_rerun_is_a_no_op(server, site, tmp_path):
    out = tmp_path / "o"
    run(server, out)
    site.log.clear()
    lines: list[str] = []
    res = run(server, out, lines=lines)
    assert res.already_done and res.done and res.fetched == 0 and res.pages == 3
    assert site.log == []
    assert any("nothing to do" in ln for ln in lines)


def test_mismatched_params_or_foreign_folder_refused(server, site, tmp_path):
    out = tmp_path / "o"
    run(server, out, max_pages=1)
    other = hv.HarvestParams("arXiv", set="physics:gr-qc", from_="2024-01-01", until="2024-01-31")
    site.log.clear()
    with pytest.raises(InputError, match="different parameters") as ei:
        run(server, out, other)
    assert "\n" not in str(ei.value) and "--restart" in str(ei.value)
    assert site.log == []
    # --restart discards the old pages and harvests the new request
    res = run(server, out, other, restart=True)
    assert res.done and res.fetched == 3
    assert json.loads((out / "harvest-state.json").read_text())["params"]["set"] == "physics:gr-qc"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        run(server, foreign)
    assert (foreign / "notes.txt").exists()


def test_rate_limit_gaps_at_least_min_interval(server, site, tmp_path, ft):
    session = StampedSession(ft)
    site.faults[site.token_for("arXiv", 1)] = [(503, {"Retry-After": "1"})]
    res = run(server, tmp_path / "o", ft=ft, session=session, min_interval=4.0)
    assert res.done
    gaps = [b - a for a, b in zip(session.stamps, session.stamps[1:])]
    assert len(gaps) == 3 and all(g >= 4.0 for g in gaps)
    assert ft.sleeps == [4.0, 1, 3.0, 4.0]  # Retry-After 1 s, topped up to the interval


@pytest.mark.parametrize("params,code,hint", [
    (hv.HarvestParams("oai_dc"), "cannotDisseminateFormat", "--format"),
    (hv.HarvestParams("arXiv", set="physics:nope"), "badArgument", "--set"),
])
def test_oai_error_is_input_error(server, site, tmp_path, params, code, hint):
    with pytest.raises(InputError) as ei:
        run(server, tmp_path / "o", params)
    msg = str(ei.value)
    assert code in msg and hint in msg and "\n" not in msg
    assert len(site.log) == 1  # not retried
    # nothing was saved, so a corrected rerun into the same folder is accepted
    assert run(server, tmp_path / "o", PARAMS).done


def test_expired_token_on_resume(server, site, tmp_path):
    out = tmp_path / "o"
    run(server, out, max_pages=1)
    site.expired.add(site.token_for("arXiv", 1))
    with pytest.raises(InputError, match="badResumptionToken") as ei:
        run(server, out)
    assert "--restart" in str(ei.value) and "fresh --out" in str(ei.value)
    assert (out / "page-00001.xml").exists()
    site.expired.clear()
    assert run(server, out, restart=True).fetched == 3


def test_no_records_match_is_an_empty_done_harvest(server, site, tmp_path):
    out = tmp_path / "o"
    lines: list[str] = []
    res = run(server, out, hv.HarvestParams("arXiv", set="physics:empty"), lines=lines)
    assert (res.pages, res.records, res.done) == (0, 0, True)
    assert list(out.glob("page-*.xml")) == []
    assert any("no records match" in ln for ln in lines)
    site.log.clear()
    assert run(server, out, hv.HarvestParams("arXiv", set="physics:empty")).already_done
    assert site.log == []


def test_wrong_endpoint_fails_fast(server, site, tmp_path):
    with pytest.raises(InputError, match="HTTP 404.*--base-url"):
        hv.harvest(server.url.replace("/oai", "/nope"), tmp_path / "o", PARAMS,
                   sleep=FakeTime().sleep, clock=FakeTime().clock, log=lambda m: None, timeout=5)
    assert len(site.log) == 1


@pytest.mark.parametrize("kw,match", [
    ({"from_": "2024-13-01"}, "--from"),
    ({"until": "Jan 2024"}, "--until"),
    ({"from_": "2024-02-01", "until": "2024-01-01"}, "after"),
    ({"set": "physics hep-th"}, "--set"),
])
def test_bad_params_rejected_before_any_request(server, site, tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        run(server, tmp_path / "o", hv.HarvestParams("arXiv", **kw))
    assert site.log == []


def test_retry_after_parsing():
    assert hv.retry_after_seconds("30", 0) == 30
    assert hv.retry_after_seconds(email.utils.formatdate(1000, usegmt=True), 990) == 10
    assert hv.retry_after_seconds(email.utils.formatdate(1000, usegmt=True), 2000) == 0
    assert hv.retry_after_seconds("soon", 0) is None and hv.retry_after_seconds(None, 0) is None


def _parser():
    ap = argparse.ArgumentParser(prog="python -m dataset_builders")
    hv.add_parser(ap.add_subparsers(dest="command", required=True))
    return ap


def test_cli_help_and_run(server, site, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["harvest", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--out", "--set", "--from", "--until", "--format", "--base-url", "--contact",
                 "--min-interval", "--restart", "https://arxiv.org/oai"):
        assert flag in help_text
    out = tmp_path / "hep-th"
    args = _parser().parse_args(["harvest", "--out", str(out), "--set", "physics:hep-th",
                                 "--from", "2024-01-01", "--until", "2024-01-31", "--format", "arXivRaw",
                                 "--base-url", server.url, "--min-interval", "0", "--contact", "a@b.org"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "page 3: 1 records, 7 so far of 7" in err and "harvest complete" in err
    assert site.log[0]["metadataPrefix"] == "arXivRaw"


def test_cli_gives_up_with_exit_1_and_bad_args_raise_input_error(server, site, tmp_path, capsys):
    site.faults["start"] = [(500, {})]
    args = _parser().parse_args(["harvest", "--out", str(tmp_path / "o"), "--base-url", server.url,
                                 "--min-interval", "0", "--max-tries", "1"])
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dataset_builders: error: gave up on page 1")
    args = _parser().parse_args(["harvest", "--out", str(tmp_path / "p"), "--from", "yesterday"])
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        args.func(args)


def test_cli_main_wiring(server, site, tmp_path, capsys):
    from dataset_builders import cli

    rc = cli.main(["harvest", "--out", str(tmp_path / "o"), "--base-url", server.url,
                   "--min-interval", "0", "--format", "oai_dc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannotDisseminateFormat" in err[0]
    rc = cli.main(["harvest", "--out", str(tmp_path / "o"), "--base-url", server.url,
                   "--min-interval", "0"])
    assert rc == 0 and [p.id for p in iter_input(str(tmp_path / "o"))] == site.ids
