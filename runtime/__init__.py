"""The search runtime (data, training, trial store, executors, search algorithms).

Installed as `nasdsl.runtime`; never imported as a bare `runtime`.
"""
