"""The ceiling to compare the service with: starlette + uvicorn, the same feature transform and
model, nothing else (no validation, no logging, no metrics). Run as a module:

    python -m bench.lib.bare_endpoint STORE_DIR MODEL_NAME PORT
"""

from __future__ import annotations

import json
import sys

import polars as pl
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasks.core.store import LocalStore
from tasks.registry.versions import Registry


def make_app(store_dir: str, model_name: str) -> Starlette:
    registry = Registry(LocalStore(store_dir), model_name)
    mv = registry.resolve("champion")
    booster, transform = registry.load_booster(mv), registry.load_transform(mv)

    async def predict(request: Request) -> Response:
        body = json.loads(await request.body())
        rows = body["records"] if "records" in body else [body["record"]]
        p = booster.predict(transform.to_matrix(pl.DataFrame(rows, infer_schema_length=None)), num_threads=1)
        return Response(
            json.dumps([{"probability": float(x), "model_version": mv.version} for x in p]),
            media_type="application/json",
        )

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/predict_batch", predict, methods=["POST"]),
        ]
    )


if __name__ == "__main__":
    store_dir, model_name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(
        make_app(store_dir, model_name), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
