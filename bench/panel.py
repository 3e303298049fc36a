"""Panel benchmark: how fast the page loads, and what an open page costs the daemon in fps.

One daemon process with the panel on; N paced sessions (as bench/load.py) run twice for the
same time, first with no page open, then with the panel open in headless Chromium (status
every 1 s, two previews every 0.5 s). Page load is timed by the browser's own navigation
timing, plus the time until every style's thumbnail is shown.

    python bench/panel.py --sessions 4 --seconds 30 --pipeline passthrough
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (bench/load.py beside this file)

from morphcam.daemon.client import DaemonClient  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def open_page(url: str, seconds: float, result: dict) -> None:
    try:
        _open_page(url, seconds, result)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["ready"].set()


def _open_page(url: str, seconds: float, result: dict) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 1000}, bypass_csp=True)
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function("[...document.querySelectorAll('#styles .style img')].every(i => i.src.startsWith('blob:'))"
                               " && document.querySelectorAll('#styles .style').length > 0", timeout=60000)
        result["thumbnails_ms"] = (time.perf_counter() - t0) * 1000
        timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
        import json

        nav = json.loads(timing)
        result["dom_content_loaded_ms"] = nav["domContentLoadedEventEnd"]
        result["load_event_ms"] = nav["loadEventEnd"]
        result["ready"].set()
        page.wait_for_timeout(seconds * 1000)
        browser.close()


def summary(rows: list[dict]) -> dict:
    return {"min_fps": min(r["fps_out"] for r in rows), "mean_fps": float(np.mean([r["fps_out"] for r in rows])),
            "worst_p99_ms": max(r["latency_p99_ms"] for r in rows),
            "mean_p50_ms": float(np.mean([r["latency_p50_ms"] for r in rows]))}


def main() -> int:
    p = load.parser()
    p.add_argument("--panel-port", type=int, default=50170)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = load.start_daemon(args, tmp, panel=f"127.0.0.1:{args.panel_port}")
        try:
            with DaemonClient(address) as client:
                status = client.status()
            without = load.run_sessions(args, address)
            page: dict = {"ready": threading.Event()}
            browser = threading.Thread(target=open_page, args=(f"http://127.0.0.1:{args.panel_port}/",
                                                              args.seconds + 5, page), daemon=True)
            browser.start()
            page["ready"].wait(90)
            if "error" in page:
                raise SystemExit(f"the panel page failed: {page['error']}")
            with_page = load.run_sessions(args, address)
            browser.join(args.seconds + 60)
        finally:
            proc.terminate()
            proc.wait(30)
    a, b = summary(without), summary(with_page)
    print(f"# {args.sessions} sessions x {args.fps:g} fps x {args.size} for {args.seconds:g} s, pipeline "
          f"{status.pipeline} on {status.device}")
    print("| | min fps | mean fps | mean p50 ms | worst p99 ms |")
    print("|---|---|---|---|---|")
    for name, s in (("no page", a), ("panel open", b)):
        print(f"| {name} | {s['min_fps']:.1f} | {s['mean_fps']:.1f} | {s['mean_p50_ms']:.1f} | {s['worst_p99_ms']:.1f} |")
    print(f"page: DOMContentLoaded {page['dom_content_loaded_ms']:.0f} ms, load event {page['load_event_ms']:.0f} ms, "
          f"all style thumbnails shown {page['thumbnails_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
