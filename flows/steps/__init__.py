"""The Prefect side in one folder: the steps (named Prefect tasks) over the domain in ``tasks/``.

One module per stage (``data``, ``model``, ``registry``, ``monitoring``, ``serving``), each step a few
lines over a domain function, plus what every step shares: ``runtime`` (retrying and cached task
kinds, the run context, artifacts, blocks), ``engine`` (local threads or a Dask cluster), ``events``
(Prefect events about a model) and ``retrain_slot`` (the retrain cooldown, a Prefect concurrency
limit). Nothing under ``tasks/`` imports Prefect; everything Prefect-specific is here or in a flow.
"""
