"""The tool a user would pick instead: a minimal stock BentoML service of the same model and the same
feature transform, written as BentoML's quickstart writes one (a typed request, predict, answer), with
no contract, request ids, prediction log, canary or metrics of its own. Served by the bench with

    bentoml serve bench.lib.stock_bento:Stock    (DRIFTLOOP_STORE_URI and the model name in the env)
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import polars as pl

from tasks.core.store import LocalStore
from tasks.registry.versions import Registry


@bentoml.service(name="stock", workers=1, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class Stock:
    def __init__(self) -> None:
        registry = Registry(LocalStore(os.environ["DRIFTLOOP_STORE_URI"]), os.environ["BENCH_MODEL_NAME"])
        self.version = registry.resolve("champion")
        self.booster, self.transform = (
            registry.load_booster(self.version),
            registry.load_transform(self.version),
        )

    @bentoml.api
    def predict(self, record: dict[str, Any]) -> dict[str, Any]:
        p = self.booster.predict(self.transform.to_matrix(pl.DataFrame([record])), num_threads=1)
        return {"probability": float(p[0]), "model_version": self.version.version}

    @bentoml.api
    def predict_batch(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        p = self.booster.predict(
            self.transform.to_matrix(pl.DataFrame(records, infer_schema_length=None)), num_threads=1
        )
        return [{"probability": float(x), "model_version": self.version.version} for x in p]
