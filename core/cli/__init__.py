"""`tweety` command line: a table of commands (core.cli.adaptation, core.cli.running), each a thin layer over the
same stage functions and project folder the wizard uses."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from core.cli import adaptation, running
from core.cli.options import ProgressBars
from core.errors import TweetyError, plain_os_error, quiet_developer_warnings
from core.jobs import Cancelled

COMMANDS = {c.name: c for c in (*adaptation.COMMANDS, *running.COMMANDS)}
chat_loop = running.chat_loop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tweety", description="Adapt a language model to a new language by trans-tokenization, and measure it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    quiet_developer_warnings(a.verbose)
    bars = ProgressBars()
    start = time.monotonic()
    try:
        code = COMMANDS[a.command].run(a, bars)
    except TweetyError as e:
        bars.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        bars.close()
        print("cancelled; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - only operating-system failures become messages; bugs keep a traceback
        plain = plain_os_error(e)
        if plain is None:
            raise
        bars.close()
        print(f"error: {plain}", file=sys.stderr)
        return 2
    bars.close()
    logging.getLogger(__name__).info("done in %.1f s", time.monotonic() - start)
    return code or 0
