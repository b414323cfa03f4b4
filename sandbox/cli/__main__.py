"""``python -m sandbox.cli``: the same as the installed ``sandbox`` command."""

from sandbox.cli.main import main

main()
