"""Which models serve: the registry's aliases, loaded and kept in step without a restart.

- ``ModelSet``: the loaded champion (and challenger) with their fitted transforms; scoring applies the
  very transform saved with each version.
- ``RegistryWatcher``: polls the registry's aliases and swaps in new versions without a restart. A
  version that fails to load (missing or corrupt files) is not swapped in: the service keeps what it
  has and reports the problem.

A model file is untrusted input: its bytes are checked against the hash recorded at registration, and
it is loaded and made to score once in a child process before this process touches it, because
LightGBM's fatal errors (e.g. a truncated model: "Model format error") abort the process that loads it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from tasks.model.features import FittedTransform
from tasks.registry.versions import ModelVersion, Registry, RegistryError

log = logging.getLogger("driftloop.serving")


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    booster: lgb.Booster
    transform: FittedTransform

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        return self.booster.predict(self.transform.to_matrix(frame), num_threads=1)


_SMOKE_TEST = """
import sys
import lightgbm as lgb
import numpy as np
booster = lgb.Booster(model_str=sys.stdin.buffer.read().decode())
booster.predict(np.zeros((2, booster.num_feature())), num_threads=1)
"""


def smoke_test_in_child(model_text: bytes, what: str, timeout: float = 120.0) -> None:
    """Load ``model_text`` and score with it in a separate process; raise if that process fails or
    dies (LightGBM aborts on some malformed models, which would take this process down with it)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SMOKE_TEST], input=model_text, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(
            f"{what}: loading the model took over {timeout:.0f} s in a child process"
        ) from None
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise RegistryError(f"{what}: the model file does not load ({how}: {detail[0][:300]})")


def load_version(registry: Registry, mv: ModelVersion, inputs: set[str] | None = None) -> LoadedModel:
    """Load and smoke-test a version: a model that cannot score is never swapped in, nor one needing
    inputs the service's request schema (``inputs``, fixed when it started) does not take."""
    text = registry.read_file(mv, "model.txt")  # checked against its registration hash
    smoke_test_in_child(text, f"{registry.model_name} v{mv.version}")
    booster = lgb.Booster(model_str=text.decode())
    transform = registry.load_transform(mv)
    lacking = sorted(set(transform.spec.input_columns) - inputs) if inputs is not None else []
    if lacking:
        raise RegistryError(
            f"v{mv.version} needs input(s) {lacking} that this service's request schema does not take "
            "(its dataset config changed): restart the service to serve it"
        )
    if booster.num_feature() != len(transform.feature_names):
        raise RegistryError(
            f"v{mv.version}: model has {booster.num_feature()} features, "
            f"transform {len(transform.feature_names)}"
        )
    return LoadedModel(version=mv, booster=booster, transform=transform)


@dataclass
class ModelSet:
    """What serves right now. Replaced as a whole (one reference swap), never mutated in place."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    etag: str | None = None


@dataclass
class WatcherStatus:
    loaded_at: str | None = None
    last_check: str | None = None
    problems: list[str] = field(default_factory=list)


class RegistryWatcher:
    """Keeps a ``ModelSet`` in step with the registry's aliases."""

    def __init__(self, registry: Registry, poll_seconds: float = 2.0, inputs: set[str] | None = None):
        self.registry = registry
        self.inputs = inputs
        self.poll_seconds = poll_seconds
        self.models = ModelSet()
        self.status = WatcherStatus()
        self._cache: dict[int, LoadedModel] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Reload if the aliases changed; return True when the served set changed."""
        doc, etag = self.registry.store.read_json_with_etag(self.registry.aliases_key)
        self.status.last_check = datetime.now(timezone.utc).isoformat()
        if etag is not None and etag == self.models.etag:
            return False
        aliases = (doc or {}).get("aliases", {})
        problems, loaded = [], {}
        for alias in ("champion", "challenger"):
            version = aliases.get(alias)
            if version is None:
                continue
            current = getattr(self.models, alias)
            if current is not None and current.version.version == version:
                loaded[alias] = current
                continue
            try:
                loaded[alias] = self._cache.get(version) or load_version(
                    self.registry, self.registry.get(version), self.inputs
                )
                self._cache = {
                    version: loaded[alias],
                    **{k: v for k, v in self._cache.items() if k != version},
                }
                while len(self._cache) > 4:
                    self._cache.pop(next(iter(self._cache)))
            except Exception as exc:  # noqa: BLE001 - any failure means: keep what we have
                keep = current.version.version if current else None
                problems.append(
                    f"{alias} v{version} failed to load ({type(exc).__name__}: {exc}); "
                    f"{'still serving v' + str(keep) if keep else 'no ' + alias + ' loaded'}"
                )
                log.error("driftloop: %s", problems[-1])
                if current is not None:
                    loaded[alias] = current
        self.status.problems = problems
        # remember the etag only when everything loaded, so a fixed registry is picked up next poll
        new = ModelSet(
            champion=loaded.get("champion"),
            challenger=loaded.get("challenger"),
            etag=etag if not problems else None,
        )
        changed = (_v(new.champion), _v(new.challenger)) != (
            _v(self.models.champion),
            _v(self.models.challenger),
        )
        self.models = new
        if changed:
            self.status.loaded_at = datetime.now(timezone.utc).isoformat()
            log.info("driftloop: serving champion %s, challenger %s", _v(new.champion), _v(new.challenger))
        return changed

    def use_packaged(self, path: Path) -> None:
        """Serve the model packaged in the bento until the registry can be read."""
        import json

        text = (path / "model.txt").read_bytes()
        smoke_test_in_child(text, f"packaged model {path.name}")
        booster = lgb.Booster(model_str=text.decode())
        transform = FittedTransform.from_json((path / "transform.json").read_text())
        meta = json.loads((path / "registry_version.json").read_text())
        self.models = ModelSet(champion=LoadedModel(ModelVersion.model_validate(meta), booster, transform))
        self.status.problems.append(
            f"registry unreadable at start; serving the packaged model v{meta['version']}"
        )
        log.warning("driftloop: %s", self.status.problems[-1])

    def start(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - start anyway; the loop keeps trying
            self.status.problems = [f"registry unreachable: {type(exc).__name__}: {exc}"]
            log.error("driftloop: %s", self.status.problems[0])
        self._thread = threading.Thread(target=self._loop, name="registry-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unreachable
                self.status.problems = [f"registry unreachable: {type(exc).__name__}: {exc}"]
                log.warning("driftloop: %s", self.status.problems[0])

    def stop(self) -> None:
        self._stop.set()


def _v(model: LoadedModel | None) -> int | None:
    return model.version.version if model else None
