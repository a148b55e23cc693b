#!/usr/bin/env python3
"""Fails when a setting read in webapp/settings.py (env_str/env_bool/env_int/env_list("NAME")) is missing from
.env.example, so the list of settings cannot drift from the code. Standard library only."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    code = (ROOT / "webapp" / "settings.py").read_text()
    read = set(re.findall(r"env_(?:str|bool|int|list)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']", code))
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    missing = sorted(read - listed)
    if missing:
        print(f".env.example lacks settings read in webapp/settings.py: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
