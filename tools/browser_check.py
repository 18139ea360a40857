"""Opens helixlab reports in headless Chromium and checks what a reader would see: the page
loads without script or resource errors (console and the page's own check), every image
loads, every contents link has its target, the interactive heatmaps are drawn with a tick label
for every layer (0 and the last among them), the interactive neuron grids colour their cells,
and a screenshot of the whole page is not blank.

First a control page with a broken image, a dangling link, an undrawn neuron grid and a script
error must be caught, so a check that can no longer see problems fails instead of passing.

    python tools/browser_check.py OUT_DIR REPORT[:LAYERS] ...

LAYERS, when given, is the model's layer count: the heatmaps' layer ticks must include 0 and
LAYERS - 1. Screenshots go to OUT_DIR. Python's standard library only.
"""

import html
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zlib

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]


def chromium():
    for name in ["chromium", "chromium-browser", "google-chrome"]:
        if shutil.which(name):
            return name
    sys.exit("browser_check: no Chromium on PATH (make browser-check installs it)")


def run(page, *extra):
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra,
                              page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    return out.stdout, out.stderr


def inspect(page):
    """The page's own check (data-check on <body>) and the console errors Chromium logged."""
    dom, log = run(page, "--dump-dom")
    m = re.search(r'data-check="([^"]*)"', dom)
    check = json.loads(html.unescape(m.group(1))) if m else None
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return check, console


def problems(check, console, layers=None):
    if check is None:
        return ["the page never finished loading (no data-check on <body>)"]
    found = [f"console: {c}" for c in console]
    found += [f"broken image {s}" for s in check["broken"]]
    found += [f"contents link {a} has no target" for a in check["dangling"]]
    found += [f"error: {e}" for e in check["errors"]]
    if check["images"] == 0:
        found.append("no images")
    if layers is not None:
        ticks = set(check["layer_ticks"])
        if check["heatmaps"] < 2:
            found.append(f"{check['heatmaps']} interactive heatmaps, expected the heads' TE and DE")
        for t in ["0", str(layers - 1)]:
            if t not in ticks:
                found.append(f"no tick label for layer {t} in the heatmaps")
        # Both reports run the neuron stage: its grids are drawn, every cell of them.
        if check["grids"] < 2:
            found.append(f"{check['grids']} interactive neuron grids drawn, expected at least 2")
    empty = [i for i, n in enumerate(check["grid_cells"]) if n == 0]
    if empty:
        found.append(f"interactive neuron grids {empty} drew no cells")
    return found


def not_blank(png):
    """Whether a PNG's pixels differ (a blank page screenshot is one colour)."""
    data = png.read_bytes()
    idat = b"".join(data[i + 8:i + 8 + int.from_bytes(data[i:i + 4], "big")]
                    for i in [m.start() - 4 for m in re.finditer(b"IDAT", data)])
    raw = zlib.decompress(idat)
    return len(set(raw[:2_000_000])) > 16


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    # The control: a report-like page with the report's self-check and three faults.
    report = pathlib.Path(sys.argv[2].split(":")[0]).read_text()
    script = report[report.index("<script>"):report.index("</script>") + 9]
    control = out / "control.html"
    control.write_text(f"<!doctype html><html><body>{script}<img src='missing.png'>"
                       "<a href='#nowhere'>x</a><figure class='ngrid'><canvas></canvas></figure>"
                       "<script>undefinedFunction()</script></body></html>")
    found = problems(*inspect(control))
    caught = [any(w in p for p in found)
              for w in ["missing.png", "#nowhere", "undefinedFunction", "drew no cells"]]
    print(f"control page: {len(found)} problems caught ({', '.join(found)[:200]})")
    if not all(caught):
        print(f"FAIL: the check missed a fault of the control page: {caught}")
        failed += 1
    for arg in sys.argv[2:]:
        path, _, layers = arg.partition(":")
        page = pathlib.Path(path)
        check, console = inspect(page)
        found = problems(check, console, int(layers) if layers else None)
        shot = out / f"{page.parent.parent.name}.png"
        run(page, f"--screenshot={shot.resolve()}", "--window-size=1400,9000")
        if not shot.exists() or not not_blank(shot):
            found.append(f"screenshot {shot} is missing or blank")
        for p in found:
            print(f"FAIL {page}: {p}")
        failed += bool(found)
        if check:
            print(f"ok   {page}: {check['images']} images, {check['links']} contents links, "
                  f"{check['heatmaps']} heatmaps, {check['grids']} neuron grids "
                  f"({sum(check['grid_cells'])} cells), layer ticks {check['layer_ticks'][:1]}.."
                  f"{check['layer_ticks'][-1:] if check['layer_ticks'] else []}; screenshot {shot}")
    sys.exit(1 if failed else 0)


main()
