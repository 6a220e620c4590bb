"""``python -m fastroute.bench``: microbenchmarks of the matcher, with peers side by side.

Modules, one job each: ``workload`` (rules and requests), ``pytrie`` (the pure-Python
baseline), ``peers`` (adapters for the optional peers), ``measure`` (timing and
memory), ``run`` (the order of work), ``targets`` (the issue's goals), ``report``
(the table) and ``__main__`` (the command line).
"""
