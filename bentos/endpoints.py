"""Every path the service answers, declared once: who may call it, what body it takes, whether it
needs a loaded champion. The request guard (auth, body type, 503) and the OpenAPI document both read
these declarations, and the service refuses to start with an API that has none, so a new endpoint
cannot be left out of either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

JSON = "application/json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class Endpoint:
    path: str
    token: Literal["none", "scoring", "feedback"]  # which bearer token it needs when auth is on
    needs_champion: bool = False  # a 503 (with Retry-After) while no champion is loaded
    body: str = JSON  # the only Content-Type its body may have
    mounted: bool = False  # served by a mounted ASGI app: documented beside BentoML's generated APIs

    @property
    def name(self) -> str:
        return self.path.strip("/")


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/predict", "scoring", needs_champion=True),
    Endpoint("/predict_batch", "scoring", needs_champion=True),
    Endpoint("/predict_columns", "scoring", needs_champion=True),
    Endpoint("/predict_arrow", "scoring", needs_champion=True, body=ARROW_STREAM, mounted=True),
    # a caller allowed to score is not thereby allowed to write the labels that judge models
    Endpoint("/feedback", "feedback"),
    Endpoint("/model_status", "scoring"),
    # BentoML's own: health, metrics, the API document
    *(Endpoint(p, "none") for p in ("/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs.json", "/")),
)
BY_PATH = {e.path: e for e in ENDPOINTS}


def endpoint_of(path: str) -> Endpoint | None:
    """The declaration a request path falls under (a mounted app's own sub-paths included)."""
    if path in BY_PATH:
        return BY_PATH[path]
    return next((e for e in ENDPOINTS if e.mounted and path.startswith(e.path + "/")), None)


def paths_with(token: str | None = None, needs_champion: bool | None = None) -> tuple[str, ...]:
    return tuple(
        e.path
        for e in ENDPOINTS
        if (token is None or e.token == token)
        and (needs_champion is None or e.needs_champion == needs_champion)
    )


def check_declared(api_names: Iterable[str], mounted_paths: Iterable[str]) -> None:
    """Fail at start, naming it, when the service has an API or mounted app no declaration covers."""
    undeclared = sorted(
        [f"/{n}" for n in api_names if f"/{n}" not in BY_PATH]
        + [p for p in mounted_paths if p not in BY_PATH or not BY_PATH[p].mounted]
    )
    if undeclared:
        raise RuntimeError(
            f"endpoint(s) {undeclared} have no declaration in bentos/endpoints.py: declare who may call "
            "each (token), its body type and whether it needs a champion"
        )
