"""``python -m resile``: the ``resile`` command (it needs the ``cli`` extra: click, rich)."""

from __future__ import annotations

import sys


def _main() -> int:
    try:
        from resile.cli import main
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("click", "rich"):
            raise
        # the cli extra is not installed: say so in one line
        print(
            f"resile: the command needs the cli extra ({exc.name} is missing): "
            "pip install 'resile[cli]'",
            file=sys.stderr,
        )
        return 2
    return main()


if __name__ == "__main__":
    raise SystemExit(_main())
