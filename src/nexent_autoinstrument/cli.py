"""``nexent-autoinstrument``: mock-llm, demo and doctor."""

from __future__ import annotations

import sys

#: sub-command -> (its module, what it does: its help line here and its description)
COMMANDS = {
    "mock-llm": ("nexent_autoinstrument.tools.mock", "Run the mock OpenAI-compatible LLM."),
    "demo": ("nexent_autoinstrument.tools.demo", "Run the example service on the mock LLM; print what was measured."),
    "doctor": ("nexent_autoinstrument.tools.doctor", "Check the setup and say how to fix what is wrong."),
}


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a sub-command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        from . import __version__

        print(f"nexent-autoinstrument {__version__}")
        return
    if not args or args[0] not in COMMANDS:
        print("usage: nexent-autoinstrument {" + ",".join(COMMANDS) + "} [options] | --version\n")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:10} {help_text}")
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    import importlib

    module = importlib.import_module(COMMANDS[args[0]][0])
    module.main(args[1:])
