"""The ceiling to compare the service with: starlette + uvicorn, the same feature transform and
model, nothing else (no validation, no logging, no metrics). Run as a module:

    python -m bench.lib.bare_endpoint STORE_DIR MODEL_NAME PORT [--coalesce]

With ``--coalesce`` single-row requests that arrive together are scored as one batch, with the
service's own ``Coalescer``: the ceiling of that technique, so a reader can tell what the service gains
from batching and what it loses to everything else.
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

from bentos.coalesce import Coalescer
from tasks.core.store import LocalStore
from tasks.registry.versions import Registry


def make_app(store_dir: str, model_name: str, coalesce: bool = False) -> Starlette:
    registry = Registry(LocalStore(store_dir), model_name)
    mv = registry.resolve("champion")
    booster, transform = registry.load_booster(mv), registry.load_transform(mv)

    def score(rows: list[dict]) -> list[float]:
        frame = pl.DataFrame(rows, infer_schema_length=None)
        return booster.predict(transform.to_matrix(frame), num_threads=1).tolist()

    async def score_together(rows: list[dict]) -> list[float]:
        return score(rows)

    together = Coalescer(score_together)

    async def predict(request: Request) -> Response:
        body = json.loads(await request.body())
        if "records" in body:
            p = score(body["records"])
        elif coalesce:
            p = [await together.submit(body["record"])]
        else:
            p = score([body["record"]])
        return Response(
            json.dumps([{"probability": x, "model_version": mv.version} for x in p]),
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
        make_app(store_dir, model_name, coalesce="--coalesce" in sys.argv[4:]),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
