"""The panel in real headless Chromium (Debian's), driven by Playwright, against a real daemon."""
from __future__ import annotations

import shutil

import pytest

from helpers.daemons import StylePipeline, frames, wait_until
from morphcam.daemon.client import LiveStream, StreamSettings
from morphcam.daemon.sample import facecam_frame

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: run install/dev-deps.sh")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_text(page, selector: str, text: str, timeout: float = 10.0) -> None:
    """Poll from Python: the page's CSP forbids the string evaluation wait_for_function uses."""
    assert wait_until(lambda: text in (page.text_content(selector) or ""), timeout=timeout), \
        f"{selector} never showed {text!r}: {page.text_content(selector)!r}"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_click_style_preview_and_screenshot(start_daemon, browser, tmp_path):
    pipeline = StylePipeline()
    daemon = start_daemon(pipeline, panel="127.0.0.1:0")
    with LiveStream(daemon.address, StreamSettings(256, 144, "original", name="facecam")) as live:
        t = [0]

        def feed(n=3):
            for _ in range(n):
                t[0] += 1
                live.submit(facecam_frame(t[0] / 30))
                live.get_output(2)

        feed()
        page = browser.new_page(viewport={"width": 900, "height": 1000})
        page.goto(daemon.daemon.panel.url)
        page.wait_for_selector(".style[data-style='pencil sketch'] img[src^='blob:']", timeout=20000)
        page.click(".style[data-style='pencil sketch']")
        assert wait_until(lambda: live.session_id in pipeline.prompts, timeout=10)
        assert pipeline.prompts[live.session_id].prompts[0].text == "a pencil sketch"
        page.wait_for_selector(".style.active[data-style='pencil sketch']", timeout=5000)
        assert page.text_content("#current-prompt") == "a pencil sketch"
        # The preview follows the stream.
        page.wait_for_selector("#preview-output[src^='blob:']", timeout=10000)
        first = page.get_attribute("#preview-output", "src")
        for _ in range(20):
            feed(2)
            if page.get_attribute("#preview-output", "src") != first:
                break
        assert page.get_attribute("#preview-output", "src") != first, "the preview updates"
        # A free prompt with a transition, through the form.
        page.fill("#prompt-text", "watercolor painting")
        page.select_option("#mode", "transition")
        page.fill("#frames", "24")
        page.click("button[type=submit]")
        assert wait_until(lambda: pipeline.prompts[live.session_id].mode == "transition", timeout=10)
        assert pipeline.prompts[live.session_id].transition_frames == 24
        page.wait_for_selector("#activity li", timeout=5000)
        shot = tmp_path / "panel.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        for selector in ("#preview-input", "#preview-output", "#styles .style", "#prompt-form", "#chart",
                         "#enabled", "#strength", "#activity li"):
            assert page.is_visible(selector), selector


def test_bad_input_from_the_page_is_refused_with_a_message(start_daemon, browser):
    pipeline = StylePipeline()
    daemon = start_daemon(pipeline, panel="127.0.0.1:0")
    with LiveStream(daemon.address, StreamSettings(64, 48, "original", name="cam")) as live:
        live.submit(frames(1)[0])
        live.get_output(5)
        page = browser.new_page()
        page.goto(daemon.daemon.panel.url)
        page.wait_for_selector("#controls:not([hidden])", timeout=10000)
        page.fill("#prompt-text", "<script>window.pwned = 1</script>")
        page.click("button[type=submit]")
        page.wait_for_selector("#message:not([hidden])", timeout=5000)
        assert "may not contain markup" in page.text_content("#message")
        assert page.evaluate("window.pwned") is None
        page.evaluate("document.getElementById('prompt-text').removeAttribute('maxlength')")
        page.fill("#prompt-text", "y" * 5000)
        page.click("button[type=submit]")
        wait_text(page, "#message", "too long")
        assert live.session_id not in pipeline.prompts


def test_page_without_the_token_says_what_to_do(start_daemon, browser):
    daemon = start_daemon(StylePipeline(), panel="127.0.0.1:0", token="s3cret")
    page = browser.new_page()
    page.goto(daemon.daemon.panel.url)
    wait_text(page, "#message", "#token=")
    page.goto(daemon.daemon.panel.url + "#token=s3cret")
    page.reload()
    page.wait_for_selector("#empty:not([hidden])", timeout=10000)  # authorised: no session yet
