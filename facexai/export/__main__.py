"""``python -m facexai.export export|audit ...``: the two commands without the main CLI."""

from __future__ import annotations

import sys

from facexai.export.cli import audit_main, export_main

COMMANDS = {"export": export_main, "audit": audit_main}


def main(argv: list[str]) -> int:
    """Dispatch to a command; usage on a missing or unknown command."""
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: python -m facexai.export {{{','.join(COMMANDS)}}} [--help] ...\n")
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
