"""The JSON API's shared parts (mounted under ``/api/``): how a client authenticates and what every endpoint does first.

The endpoints themselves live in the apps they belong to (``portal/worklist/api.py``,
``portal/reports/api.py``), as thin views over those apps' service functions.
"""
