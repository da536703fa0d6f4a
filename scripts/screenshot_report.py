"""A screenshot of an HTML report the way a reader sees it, from headless Chromium.

    noisecli report runs/SWEEP -f html -o report.html
    python scripts/screenshot_report.py report.html docs/report.png [--width 1400] [--height 2400]

Needs Debian's `chromium` (apt-get install chromium); nothing else. The page is rendered in a
window of a fixed size, --width by --height pixels (default 1400 x 2400), not at the height of
its content: a longer page is cut at the bottom and a shorter one leaves blank space below
it, so choose --height for the page at hand.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("screenshot_report: no chromium here (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={args.width},{args.height}",
               f"--screenshot={args.png.resolve()}", args.html.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not args.png.exists():
        print(f"screenshot_report: chromium failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
