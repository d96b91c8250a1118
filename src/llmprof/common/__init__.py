"""What every layer shares: errors, configuration, deterministic output files, the results layout, typed records.

Nothing here knows nsys, vLLM or how a figure looks; every other subpackage may import it.
"""
