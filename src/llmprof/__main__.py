"""``python -m llmprof``: the same command line as the ``llmprof`` script."""

from .cli import main

main()
