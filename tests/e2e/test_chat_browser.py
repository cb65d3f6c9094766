"""A person's view of the stack exactly as `make serve` configures it (the preset users get, title
generation on, the context filter): sign in in headless Chromium, land in a chat with the
physics preset already selected and no release-notes dialog, ask two questions in one chat,
watch both answers stream in, and see the chat get its title. No error in place of an answer.
Screenshot: outputs/test-artifacts/chat.png."""

from __future__ import annotations

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
QUESTIONS = ["What is the Riemann zeta function?", "When was the Michelson-Morley experiment performed?"]
ERRORS = ["exceeds the available context size", "Server Connection Error", "Oops"]

# Records every length the answer passes through, to tell a streamed answer from one that
# appears at once.
WATCH_ANSWER = """() => {
  if (window.__observer) window.__observer.disconnect();  // the previous question's watcher
  window.__answerLengths = [];
  const before = document.querySelectorAll('#response-content-container').length;
  const note = () => {
    const all = document.querySelectorAll('#response-content-container');
    const el = all.length > before ? all[all.length - 1] : null;  // the answer asked for now
    const n = el ? el.innerText.trim().length : 0;
    const seen = window.__answerLengths;
    if (n > 0 && seen[seen.length - 1] !== n) seen.push(n);
  };
  window.__observer = new MutationObserver(note);
  window.__observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def stack(tiny_gguf, chromium, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    # what `make serve` runs: the shipped preset and Open WebUI settings, nothing test-only
    config = serving.StackConfig(
        model=tiny_gguf,
        data_dir=tmp / "webui",
        admin_email="admin@localhost",
        admin_password=secrets.token_urlsafe(12),
    )
    with serving.LocalStack(config) as s:
        yield s


def signed_in_page(browser, stack):
    """A page of Open WebUI, signed in as the admin through its own form."""
    email, password = stack.admin_credentials()
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(60_000)
    page.goto(stack.webui_url)
    page.locator("#email").fill(email)
    page.locator("input[name=password]").fill(password)
    page.locator("button[type=submit]").click()
    return page


def wait_for_answer(page, n: int) -> list[int]:
    """Until the n-th answer has streamed in and stopped growing; the lengths it went through."""
    page.wait_for_function(
        f"() => document.querySelectorAll('#response-content-container').length >= {n}", timeout=120_000
    )
    page.wait_for_function("() => (window.__answerLengths || []).length >= 3", timeout=180_000)
    page.evaluate("window.__lastLen = -1")
    page.wait_for_function(
        """() => {
          const seen = window.__answerLengths || [];
          const now = Date.now();
          if (window.__lastLen !== seen.length) { window.__lastLen = seen.length; window.__since = now; }
          return now - window.__since > 4000;
        }""",
        timeout=300_000,
        polling=500,
    )
    return page.evaluate("window.__answerLengths")


def test_two_questions_in_one_chat_as_served(stack):
    from playwright.sync_api import expect, sync_playwright

    name = serving.load_preset(serving.PRESET_FILE)["name"]
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = signed_in_page(browser, stack)  # as the README says (auth is on)
            chat_input = page.locator("#chat-input")
            expect(chat_input).to_be_visible()
            # a usable chat at once: no release-notes dialog, the physics preset selected
            page.wait_for_timeout(2_000)
            assert not page.get_by_role("button", name="Okay, Let's Go!").is_visible()
            expect(page.locator("#model-selector-model-button").first).to_contain_text(name)

            lengths = []
            for i, question in enumerate(QUESTIONS, start=1):
                page.evaluate(WATCH_ANSWER)
                chat_input.click()
                page.keyboard.type(question)
                page.keyboard.press("Enter")
                expect(page.get_by_text(question).first).to_be_visible()
                lengths.append(wait_for_answer(page, i))
            answers = page.locator("#response-content-container")
            expect(answers).to_have_count(2)
            for k in range(2):
                expect(answers.nth(k)).not_to_be_empty()

            # the chat gets its title (generated, or Open WebUI's fallback: the first question)
            chat_link = page.locator('a[href^="/c/"]').first
            expect(chat_link).to_be_visible(timeout=120_000)
            expect(chat_link).not_to_have_text("New Chat", timeout=180_000)
            page.wait_for_timeout(1_500)
            page.screenshot(path=str(ARTIFACT))
            text = page.locator("body").inner_text()
        finally:
            browser.close()
    for seen in lengths:
        assert len(seen) >= 3 and seen[-1] > seen[0], seen  # each answer streamed in
    for error in ERRORS:
        assert error not in text, error
    assert ARTIFACT.stat().st_size > 10_000
    log = stack.llama_log.read_text(errors="replace")
    assert "exceeds the available context size" not in log


# An answer in every delimiter Qwen models write: Open WebUI must typeset each with KaTeX.
MATH_ANSWER = (
    "Inline, dollars: $E = mc^2$. Inline, parentheses: \\(a^2 + b^2 = c^2\\).\n\n"
    "Display, dollars:\n\n$$\\int_0^1 x \\, dx = \\frac{1}{2}$$\n\n"
    "Display, brackets:\n\n\\[\\nabla \\cdot \\mathbf{E} = \\frac{\\rho}{\\varepsilon_0}\\]\n"
)
MATH_ARTIFACT = ROOT / "outputs" / "test-artifacts" / "math.png"


def test_formulas_in_an_answer_render_with_katex(stack):
    """A chat holding an answer with inline and display math in all four delimiter forms, opened
    in the browser: each formula is a KaTeX element, none is left as raw TeX. Open WebUI sets
    \\[...\\] in text style; after the provisioned filter's outlet (Open WebUI's own
    /api/chat/completed path) both display formulas are display blocks."""
    from playwright.sync_api import expect, sync_playwright

    email, password = stack.admin_credentials()
    token = serving.webui_signin(stack.webui_url, email, password)
    preset = serving.load_preset(serving.PRESET_FILE)["id"]
    now = 1_700_000_000

    def save_chat(content: str, chat_id: str | None = None) -> str:
        user = {"id": "q1", "parentId": None, "childrenIds": ["a1"], "role": "user",
                "content": "Write four formulas.", "timestamp": now, "models": [preset]}
        answer = {"id": "a1", "parentId": "q1", "childrenIds": [], "role": "assistant", "content": content,
                  "model": preset, "modelName": preset, "done": True, "timestamp": now + 1}
        chat = {"title": "Formulas", "models": [preset], "messages": [user, answer],
                "history": {"messages": {"q1": user, "a1": answer}, "currentId": "a1"}, "timestamp": now}
        url = f"{stack.webui_url}/api/v1/chats/" + (chat_id or "new")
        status, body = serving.http_json("POST", url, {"chat": chat}, token=token)
        assert status == 200 and isinstance(body, dict) and body.get("id"), (status, body)
        return body["id"]

    def rendered(page, chat_id: str) -> tuple[int, int, str]:
        page.goto(f"{stack.webui_url}/c/{chat_id}")
        response = page.locator("#response-content-container").last
        expect(response).to_be_visible()
        expect(response.locator(".katex")).to_have_count(4, timeout=30_000)
        page.wait_for_timeout(1_000)
        return response.locator(".katex").count(), response.locator(".katex-display").count(), response.inner_text()

    chat_id = save_chat(MATH_ANSWER)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = signed_in_page(browser, stack)
            expect(page.locator("#chat-input")).to_be_visible()
            raw_count, raw_displays, raw_text = rendered(page, chat_id)

            # the answer as Open WebUI stores it after the outlet filters
            status, done = serving.http_json(
                "POST", f"{stack.webui_url}/api/chat/completed",
                {"model": preset, "chat_id": chat_id, "id": "a1", "session_id": "test",
                 "messages": [{"id": "q1", "role": "user", "content": "Write four formulas."},
                              {"id": "a1", "role": "assistant", "content": MATH_ANSWER}]}, token=token)
            assert status == 200 and isinstance(done, dict), (status, done)
            filtered = done["messages"][-1]["content"]
            assert "\\[" not in filtered and "\\(" not in filtered and filtered.count("$$") == 4, filtered
            save_chat(filtered, chat_id)
            count, displays, text = rendered(page, chat_id)
            MATH_ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(MATH_ARTIFACT))
        finally:
            browser.close()
    assert raw_count == 4 and raw_displays >= 1  # every form typeset by KaTeX as Open WebUI ships it
    assert count == 4 and displays == 2
    for shown in (raw_text, text):
        for raw in ("$E", "\\(", "\\[", "$$", "\\frac"):
            assert raw not in shown, f"{raw!r} left as raw TeX in: {shown[:300]}"
