"""Entry point for `python -m lzarchive`."""

from .cli.app import main

main()
