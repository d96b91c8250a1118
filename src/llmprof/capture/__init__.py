"""Making captures on a GPU: the model stage, the instrumented vLLM workload and the profile stage under nsys.

vLLM and torch are imported here only, inside the workload, so the analysis half never needs them.
"""
