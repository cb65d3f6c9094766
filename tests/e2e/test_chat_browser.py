"""A person's view: sign in to Open WebUI in headless Chromium, pick the physics model, ask, watch
the answer stream in. Screenshot: outputs/test-artifacts/chat.png."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from qwenphysics import serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "outputs" / "test-artifacts" / "chat.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "What is the Riemann zeta function?"

# Records every length the answer passes through, to tell a streamed answer from one that
# appears at once.
WATCH_ANSWER = """() => {
  window.__answerLengths = [];
  const note = () => {
    const el = document.querySelector('#response-content-container');
    const n = el ? el.innerText.trim().length : 0;
    const seen = window.__answerLengths;
    if (n > 0 && seen[seen.length - 1] !== n) seen.push(n);
  };
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def stack(tiny_gguf, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: run `bash scripts/setup.sh browser`", pytrace=False)
    tmp = tmp_path_factory.mktemp("browser")
    preset = serving.load_preset()
    preset["params"]["max_tokens"] = 200  # a random-weight model rarely stops by itself
    (tmp / "preset.json").write_text(json.dumps(preset))
    config = serving.StackConfig(
        model=tiny_gguf,
        parallel=1,
        data_dir=tmp / "webui",
        preset=tmp / "preset.json",
        admin_email="admin@localhost",
        admin_password=secrets.token_urlsafe(12),
        webui_env={"ENABLE_TITLE_GENERATION": "False"},
    )
    with serving.LocalStack(config) as s:
        yield s


def test_chat_in_the_browser(stack):
    from playwright.sync_api import expect, sync_playwright

    email, password = stack.admin_credentials()
    name = serving.load_preset()["name"]
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(60_000)
            page.goto(stack.webui_url)

            # sign in (auth is on)
            page.locator("#email").fill(email)
            page.locator("input[name=password]").fill(password)
            page.locator("button[type=submit]").click()
            chat_input = page.locator("#chat-input")
            expect(chat_input).to_be_visible()
            okay = page.get_by_role("button", name="Okay, Let's Go!")
            try:
                okay.click(timeout=5_000)
            except Exception:
                pass  # no release-notes dialog this time

            # pick the physics model
            page.locator("#model-selector-model-button").first.click()
            page.locator("#model-search-input").fill("physics")
            page.locator(f'button[role="option"][aria-label="Select {name} model"]').click()
            expect(page.locator("#model-selector-model-button").first).to_contain_text(name)

            # ask, and watch the answer grow
            page.evaluate(WATCH_ANSWER)
            chat_input.click()
            page.keyboard.type(QUESTION)
            page.keyboard.press("Enter")
            expect(page.get_by_text(QUESTION).first).to_be_visible()
            answer = page.locator("#response-content-container").first
            expect(answer).not_to_be_empty(timeout=120_000)
            page.wait_for_function(
                "() => (window.__answerLengths || []).length >= 3", timeout=120_000
            )
            page.wait_for_timeout(1_500)  # let the last tokens render for the picture
            page.screenshot(path=str(ARTIFACT))
            lengths = page.evaluate("window.__answerLengths")
        finally:
            browser.close()
    assert len(lengths) >= 3 and lengths[-1] > lengths[0], lengths  # it streamed in
    assert ARTIFACT.stat().st_size > 10_000
