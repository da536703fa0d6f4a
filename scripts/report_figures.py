"""The HTML report's two figures as PNG files, for docs: exactly what `noisecli report -f html` draws.

    python scripts/report_figures.py runs/teacher-sweep docs/teacher-sweep
    # -> docs/teacher-sweep-factor.png, docs/teacher-sweep-curves.png
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from noisecli.report import build
from noisecli.report.page import figures


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    configs, _ = build([Path(sys.argv[1])])
    for name, data in figures(configs).items():
        out = Path(f"{sys.argv[2]}-{name}.png")
        out.write_bytes(base64.b64decode(data))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
