"""The page's click latency in Chromium, with the timeline of a click, next to the engine's own.

Usage: python benchmarks/bench_page.py [--image FILE] [--clicks 20] [--new-crops 5]
           [--json out.json] [--timeline steps.json] [--start-up-only]

Starts ``fastsam3d web`` as a user does (the launcher, a session process per tab) with the seeded
FastSAM3D weights (the golden references' seeded weights saved as a checkpoint) and
``$FASTSAM3D_TIMELINE`` set, so that the session logs when each step of a click happens (see
:mod:`fastsam3d_web.timeline`). Debian's chromium (Playwright, headless) opens the page; an init
script logs when the browser got the mouse press and when each view's canvas was drawn and the
next animation frame began (the paint). Then: ``--clicks`` decoder-only clicks inside the
first crop (real mouse clicks in the axial view) and ``--new-crops`` clicks each in a new
segment at a new place (the encoder runs). Each click waits for the page's idle status and
for the views to settle before the next.

Written as JSON: the CPU and load, start-up times, per-click latencies (browser press ->
overlay painted in the axial view, and -> idle status) with median/min/max, the median
timeline of a decoder-only click and of a new crop (each step's start and end, ms after the
browser's press), renders/bytes per click, and the engine's own click time measured in this
process on the same volume before the page starts (the reference). The start-up timeline: the
launcher's request, the session process's spawn, imports, page, server and connection (each
with that process's CPU time), the first frame, the model's load, and the browser's steps, ms
after the address was opened.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from seeded import SHARED_DATA_DIR, seeded_model

from fastsam3d_core.benchmark.machine import cpu_name
from fastsam3d_core.examples import SPLEEN_POINT_RAS

CT_IMAGE = SHARED_DATA_DIR / "totalseg_ct/example_ct_3mm.nii.gz"
READY = "(document.querySelector('#status')?.textContent || '').startsWith('Ready')"
IDLE_WITH = "(document.querySelector('#progress')?.textContent || '').includes('idle · {} points')"
SETTLE_S = 1.0  # after the idle status: the views' later (still-quality) frames come in
TIMEOUT_MS = 120_000

# In the page before its scripts: the press time and each canvas drawing and paint, in epoch
# ms (performance.timeOrigin + now: the server's time.time() on the same machine).
BROWSER_PROBE = """
window.__bench = {presses: [], draws: [], socket: {}};
const __now = () => performance.timeOrigin + performance.now();
// When trame's client opens its websocket (start-up timeline).
const __WebSocket = window.WebSocket;
window.WebSocket = class extends __WebSocket {
  constructor(...args) {
    super(...args);
    window.__bench.socket.created = window.__bench.socket.created || __now();
    this.addEventListener('open', () => { window.__bench.socket.open ||= __now(); });
  }
};
document.addEventListener('pointerdown', () => window.__bench.presses.push(__now()), true);
// trame-rca shows each view's frame as an <img> whose src becomes the new frame's blob URL.
new MutationObserver((changes) => {
  for (const change of changes) {
    const img = change.target;
    if (img.tagName !== 'IMG' || !String(img.src).startsWith('blob:')) continue;
    const rect = img.getBoundingClientRect();
    const entry = {t: __now(), x: rect.x + rect.width / 2, y: rect.y + rect.height / 2};
    window.__bench.draws.push(entry);
    requestAnimationFrame(() => { entry.paint = __now(); });
  }
}).observe(document, {attributes: true, attributeFilter: ['src'], subtree: true});
"""

# The session page's loading as the browser timed it (epoch ms): its response (after the
# launcher's redirect), its document parsed and loaded (trame's client scripts), the websocket.
BROWSER_START_UP = """(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const at = (ms) => (ms ? performance.timeOrigin + ms : null);
  return {
    'browser: session page requested': at(nav.requestStart),
    'browser: session page received': at(nav.responseEnd),
    'browser: page scripts run (DOMContentLoaded)': at(nav.domContentLoadedEventEnd),
    'browser: page loaded': at(nav.loadEventEnd),
    'browser: websocket created': window.__bench.socket.created || null,
    'browser: websocket open': window.__bench.socket.open || null,
    'browser: first image drawn': window.__bench.draws[0].t,
    'browser: first image painted': window.__bench.draws[0].paint || null,
  };
})()"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fastsam3d web exited with status {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("fastsam3d web did not listen in time")


def start_server(image: Path, weights: Path, timeline: Path, log: Path) -> tuple:
    port = free_port()
    focus = ",".join(f"{v:.2f}" for v in SPLEEN_POINT_RAS)
    command = [str(Path(sys.executable).with_name("fastsam3d")), "web", str(image),
               "--weights", str(weights), "--focus", focus, "--port", str(port),
               "--sessions", "1", "--idle-minutes", "0"]  # fmt: skip
    env = {**os.environ, "FASTSAM3D_TIMELINE": str(timeline)}
    server = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    wait_for_port(port, server)
    return server, f"http://127.0.0.1:{port}/"


def wait_for_spare(timeline: Path, seconds: float = 180) -> float:
    """Wait until the launcher's spare session has loaded its model (its timeline says so);
    the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if any(s["step"] == "engine" and s.get("label") == "load model"
               for s in read_timeline(timeline)):  # fmt: skip
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError("the launcher's spare session did not get ready in time")


def read_timeline(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def click(page, x: float, y: float, points_after: int) -> dict:
    """One click; the browser's press time, and when the page said idle (epoch ms)."""
    presses = page.evaluate("window.__bench.presses.length")
    page.mouse.click(x, y)
    page.wait_for_function(IDLE_WITH.format(points_after), timeout=TIMEOUT_MS)
    idle = time.time() * 1000
    page.wait_for_timeout(SETTLE_S * 1000)
    press = page.evaluate(f"window.__bench.presses[{presses}]")
    status = page.text_content("#status") or ""
    return {"press": press, "idle": idle, "status": status, "x": x, "y": y}


def drive_page(browser, url: str, clicks: int | None, new_crops: int) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(BROWSER_PROBE)
    page = context.new_page()
    opened = time.time() * 1000
    page.goto(url)
    page.wait_for_function("window.__bench && window.__bench.draws.length > 0", timeout=TIMEOUT_MS)
    first_image = page.evaluate("window.__bench.draws[0].t")
    page.wait_for_function(READY, timeout=TIMEOUT_MS)
    ready = time.time() * 1000
    browser_steps = page.evaluate(BROWSER_START_UP)
    if clicks is None:  # --start-up-only
        context.close()
        return {
            "opened": opened,
            "first_image": first_image,
            "ready": ready,
            "clicks": [],
            "draws": [],
            "axial": None,
            "error": "",
            "browser start-up": browser_steps,
        }
    page.wait_for_timeout(2000)  # the first images of every view
    box = page.locator(".view-gutter").first.locator("xpath=..").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    done = [dict(click(page, cx, cy, 1), kind="first")]
    for n in range(clicks):
        dx = 4.0 * ((n % 5) - 2)
        done.append(dict(click(page, cx + dx, cy, n + 2), kind="decoder-only"))
    for n in range(new_crops):
        page.click("#next-segment")
        page.wait_for_function(IDLE_WITH.format(0), timeout=TIMEOUT_MS)
        page.wait_for_timeout(500)
        # A new segment and a point a few voxels off the others: a crop not encoded yet.
        dx, dy = -(40.0 + 25 * n), 10.0 * ((n % 3) - 1)
        done.append(dict(click(page, cx + dx, cy + dy, 1), kind="new-crop"))
    draws = page.evaluate("window.__bench.draws")
    error = page.text_content("#error") or ""
    context.close()
    return {"opened": opened, "first_image": first_image, "ready": ready, "clicks": done,
            "draws": draws, "axial": box, "error": error,
            "browser start-up": browser_steps}  # fmt: skip


def in_box(draw: dict, box: dict) -> bool:
    return box["x"] <= draw["x"] <= box["x"] + box["width"] and (
        box["y"] <= draw["y"] <= box["y"] + box["height"]
    )


def click_timeline(one: dict, until: float, steps: list[dict], draws: list[dict], box) -> dict:
    """One click's steps, ms after the browser's press: the first of each kind after it (the
    renders, encodes and sends after the MRML write, per view)."""
    press = one["press"]
    window = [s for s in steps if press - 5 <= s["t"] < until]
    line: dict = {"browser press": 0.0}

    def first(step: str, after: float, **match) -> dict | None:
        for entry in window:
            if (
                entry["step"] == step
                and entry["t"] >= after
                and all(entry.get(k) == v for k, v in match.items())
            ):
                return entry
        return None

    receive = first("receive", press - 5)
    engine = next((s for s in window if s["step"] == "engine" and "point" in s.get("label", "")),
                  None)  # fmt: skip
    mrml = first("mrml", engine["end"] if engine else press)
    if receive:
        line["server receive"] = receive["t"] - press
    if engine:
        line["engine start"], line["engine end"] = engine["t"] - press, engine["end"] - press
    if mrml:
        line["mrml write start"], line["mrml write end"] = mrml["t"] - press, mrml["end"] - press
    written = mrml["t"] if mrml else press
    renders = [s for s in window if s["step"] == "render" and s["t"] >= written]
    views = sorted({s["view"] for s in renders})
    for view in views:
        render = first("render", written, view=view)
        encode = first("encode", render["t"], view=view)
        send = first("send", encode["end"] if encode else render["end"], view=view)
        line[f"render {view}"] = [render["t"] - press, render["end"] - press]
        if encode:
            line[f"encode {view}"] = [encode["t"] - press, encode["end"] - press]
            line[f"bytes {view}"] = encode["bytes"]
        if send:
            line[f"send {view}"] = send["t"] - press
    axial_draws = [d for d in draws if in_box(d, box) and d["t"] > written and d["t"] < until]
    if axial_draws:
        line["axial canvas drawn"] = axial_draws[0]["t"] - press
        line["axial painted (overlay on screen)"] = axial_draws[0].get("paint", 0) - press
    line["idle status"] = one["idle"] - press
    line["renders"] = len(renders)
    line["render ms total"] = sum(s["end"] - s["t"] for s in window if s["step"] == "render")
    line["encoded bytes"] = sum(s["bytes"] for s in window if s["step"] == "encode")
    return line


def start_up_timeline(run: dict, steps: list[dict]) -> dict:
    """The way to the first image and to Ready, ms after the address was opened: the
    launcher's and the session's steps (the first of each), the first frame's render, encode
    and send, the model's load, and the browser's."""
    opened = run["opened"]
    events, cpu = {"browser: address opened": opened}, {}
    for entry in steps:
        if entry["t"] < opened - 5:
            continue
        if entry["step"] == "start-up":
            events.setdefault(entry["what"], entry["t"])
            cpu.setdefault(entry["what"], entry["cpu_ms"])
        elif entry["step"] in ("render", "encode", "send"):
            events.setdefault(f"first frame: {entry['step']} ({entry.get('view')})", entry["t"])
        elif entry["step"] == "engine" and entry.get("label") == "load model":
            events.setdefault("model load (worker): start", entry["t"])
            events.setdefault("model load (worker): end", entry["end"])
    events.update({k: v for k, v in run["browser start-up"].items() if v})
    events["browser: Ready status seen"] = run["ready"]
    ordered = sorted(events.items(), key=lambda item: item[1])
    timeline = {what: round(t - opened, 1) for what, t in ordered}
    return {"wall ms after the address was opened": timeline,
            "the process's CPU ms by then (launcher, session)": cpu}  # fmt: skip


def median_timeline(lines: list[dict]) -> dict:
    keys = [k for k in lines[0] if all(k in line for line in lines)
            and not isinstance(lines[0][k], str) and k != "press_epoch_ms"]  # fmt: skip
    out = {}
    for key in keys:
        values = [line[key] for line in lines]
        if isinstance(values[0], list):
            out[key] = [round(statistics.median(v[i] for v in values), 1) for i in (0, 1)]
        else:
            out[key] = round(statistics.median(values), 1)
    return out


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "n": len(values)}  # fmt: skip


def engine_reference(image: Path, clicks: int, new_crops: int) -> dict:
    """The engine's own click (the core's Session, the seeded model) on the same volume, in this
    process: decoder-only clicks around the spleen point and clicks opening new crops."""
    from fastsam3d_core.io import read_volume
    from fastsam3d_core.session import ModelPredictor, Session

    volume = read_volume(image)
    session = Session(volume, ModelPredictor(seeded_model("fastsam3d")))
    session.add_point(SPLEEN_POINT_RAS)
    inside = []
    for n in range(clicks):
        point = (SPLEEN_POINT_RAS[0] + 3.0 * ((n % 5) - 2), *SPLEEN_POINT_RAS[1:])
        start = time.perf_counter()
        session.add_point(point)
        inside.append((time.perf_counter() - start) * 1000)
    new = []
    for n in range(new_crops):
        session.new_segment()
        point = (SPLEEN_POINT_RAS[0] + 20.0 + 15 * n, *SPLEEN_POINT_RAS[1:])
        start = time.perf_counter()
        result = session.add_point(point)
        if result.encoder_ran:  # else the crop was one encoded before: not counted
            new.append((time.perf_counter() - start) * 1000)
    return {"decoder-only click ms": spread(inside), "new crop ms": spread(new) if new else None}


def measure(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    # The engine's own first: in this process, before the page starts (same volume, model).
    clicks = None if args.start_up_only else args.clicks
    reference = None if clicks is None else engine_reference(args.image, clicks, args.new_crops)
    work = Path(tempfile.mkdtemp(prefix="bench-page-"))
    weights = work / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": seeded_model("fastsam3d").state_dict()}, weights)
    timeline = work / "timeline.jsonl"
    load_before = os.getloadavg()
    server, url = start_server(args.image, weights, timeline, work / "server.log")
    waited = wait_for_spare(timeline) if args.start_up == "spare" else 0.0
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"], headless=True
            )
            try:
                run = drive_page(browser, url, clicks, args.new_crops)
            finally:
                browser.close()
    finally:
        # SIGTERM, which the launcher handles as Ctrl-C: a shell's background job (nohup ... &)
        # starts with SIGINT ignored, and the server would outlive the benchmark.
        server.terminate()
        server.wait(60)
        weights.unlink()
    steps = sorted(read_timeline(timeline), key=lambda s: s["t"])
    if args.timeline:
        args.timeline.write_text(json.dumps(steps) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    clicks = run["clicks"]
    lines = []
    for n, one in enumerate(clicks):
        until = clicks[n + 1]["press"] if n + 1 < len(clicks) else float("inf")
        line = click_timeline(one, until, steps, run["draws"], run["axial"])
        lines.append(
            dict(line, kind=one["kind"], status=one["status"], press_epoch_ms=one["press"])
        )
    result = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load average before, after": [list(load_before), list(os.getloadavg())],
        "image": str(args.image),
        "start-up": f"{args.start_up}: "
        + (
            "the address opened once the launcher's spare session was ready "
            f"({waited:.1f} s after the launcher listened)"
            if args.start_up == "spare"
            else "the address opened as soon as the launcher listened"
        ),
        "start-up ms": {
            "to first image": round(run["first_image"] - run["opened"], 1),
            "to ready status": round(run["ready"] - run["opened"], 1),
        },
        "start-up timeline": start_up_timeline(run, steps),
        "page error": run["error"],
    }
    for kind in ("decoder-only", "new-crop"):
        # As the engine said: a click whose crop was encoded before is not a new crop.
        mine = [line for line in lines if line["kind"] == kind
                and ("image encoded" in line["status"]) == (kind == "new-crop")]  # fmt: skip
        if not mine:
            continue
        overlay = [line["axial painted (overlay on screen)"] for line in mine
                   if "axial painted (overlay on screen)" in line]  # fmt: skip
        result[kind] = {
            "click -> overlay painted ms": spread(overlay) if overlay else None,
            "click -> idle status ms": spread([line["idle status"] for line in mine]),
            "engine job ms (in the page)": spread(
                [line["engine end"] - line["engine start"] for line in mine if "engine end" in line]
            ),
            "median timeline (ms after the browser's press)": median_timeline(mine),
        }
    result["engine reference (this process, same volume)"] = reference
    result["clicks"] = lines
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=CT_IMAGE)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--new-crops", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timeline", type=Path, help="also write every step logged, as JSON")
    parser.add_argument(
        "--start-up",
        choices=("spare", "cold"),
        default="spare",
        help="open the page once the launcher's spare session is ready (a tab "
        "opened a while after `fastsam3d web` started), or at once",
    )
    parser.add_argument("--start-up-only", action="store_true",
                        help="only open the page (to the Ready status): no clicks, no engine "
                             "reference")  # fmt: skip
    args = parser.parse_args()
    result = measure(args)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k != "clicks"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
