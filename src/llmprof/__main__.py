"""``python -m llmprof``: the same command line as the ``llmprof`` script."""

from llmprof.cli import main

main()
