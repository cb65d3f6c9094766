"""The test harness itself: a missing environment is a visible skip for a plain `pytest`, and a
failure under `make test` (QWENPHYSICS_TEST_ALL=1), where everything must run."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_missing_environment_skips_with_its_reason_and_fails_under_make_test(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("from tests.conftest import need\n\n\ndef test_x():\n    need('a thing', 'install it')\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    outcomes = {}
    for value in ("", "1"):
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c",
                            str(tmp_path / "pytest.ini"), str(probe)], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "QWENPHYSICS_TEST_ALL": value, "PYTHONPATH": str(ROOT)}, timeout=120)
        outcomes[value] = p.stdout
    assert "1 skipped" in outcomes[""] and "needs a thing: install it" in outcomes[""]
    assert "1 failed" in outcomes["1"] and "needs a thing: install it" in outcomes["1"]
