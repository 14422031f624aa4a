"""``python -m knetcnn info``: print what knetcnn sees (exits 0 without a GPU too)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knetcnn", description=__doc__)
    parser.add_argument("command", nargs="?", default="info", choices=["info"])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from .info import format_info, info

    report = info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
