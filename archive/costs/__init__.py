"""Storage cost accounting: what the archive holds where, what it costs now, and what it will cost.

:mod:`~archive.costs.usage` measures (a few set-based SQL aggregates),
:mod:`~archive.costs.projection` projects (pure arithmetic: the ingest rate and
the lifecycle rules in force, run forward), :mod:`~archive.costs.budgets`
compares projections with budgets and alerts once per crossing. The admin
cost page and ``manage.py tiers status`` both show :func:`usage.cost_report`.
"""
