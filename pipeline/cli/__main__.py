"""``python -m pipeline.cli``: the ``readside`` command."""

from pipeline.cli import main

main()
