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
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from tasks.model.features import FittedTransform
from tasks.registry.versions import AliasDoc, ModelVersion, Registry, RegistryError

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


def load_version(
    registry: Registry, mv: ModelVersion, inputs: set[str] | None = None, kind: str | None = None
) -> LoadedModel:
    """Load and smoke-test a version: a model that cannot score is never swapped in, nor one needing
    inputs the service's request schema (``inputs``, fixed when it started) does not take, nor one
    answering another kind of target than the service's answers (``kind``) declare."""
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
    if kind is not None and transform.task.kind != kind:
        raise RegistryError(
            f"v{mv.version} predicts a {transform.task.kind} target; this service answers {kind}: restart "
            "the service to serve it"
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


@dataclass
class WatcherStatus:
    loaded_at: str | None = None
    last_check: str | None = None
    problems: list[str] = field(default_factory=list)
    degraded: str | None = None  # why the champion that answers is not the registry's (None: it is)


def health_key(model_name: str) -> str:
    """Where a model's service records whether it answers with a fallback (``RegistryWatcher``)."""
    return f"state/serving/{model_name}/health.json"


@dataclass
class Failure:
    """A version that would not load: why, and when to try it again (doubling, up to 30 min)."""

    reason: str
    attempts: int
    retry_at: float


BACKOFF_SECONDS, BACKOFF_MAX_SECONDS = 30.0, 1800.0


class RegistryWatcher:
    """Keeps a ``ModelSet`` in step with the registry's aliases, and never goes dark on a bad version.

    A version that fails (its files no longer match their registration hash, the model does not load
    in a child process, it needs inputs the service does not take) is not swapped in; when it is the
    champion, the last good one answers instead: the one in memory, else the most recent earlier
    champion that loads, else the packaged model, and ``status.degraded`` says which and why. A failed
    version is tried again when the aliases change, or after a backoff (30 s doubling to 30 min), not
    on every poll, with one log line per attempt. When the aliases change, the versions kept in memory
    have their stored files checked again, so tampering shows up without a restart."""

    def __init__(
        self,
        registry: Registry,
        poll_seconds: float = 2.0,
        inputs: set[str] | None = None,
        kind: str | None = None,
    ):
        self.registry = registry
        self.inputs, self.kind = inputs, kind
        self.poll_seconds = poll_seconds
        self.models = ModelSet()
        self.status = WatcherStatus()
        self.packaged: LoadedModel | None = None  # the model packaged in the bento, if it serves one
        self._cache: dict[int, LoadedModel] = {}
        self._failed: dict[int, Failure] = {}
        self._alias_etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _retry_due(self) -> bool:
        return any(f.retry_at <= time.monotonic() for f in self._failed.values())

    def _fail(self, version: int, exc: Exception) -> Failure:
        """Record that ``version`` failed: one log line, and the time it may be tried again."""
        before = self._failed.get(version)
        attempts = before.attempts + 1 if before else 1
        delay = min(BACKOFF_SECONDS * 2 ** (attempts - 1), BACKOFF_MAX_SECONDS)
        failure = Failure(f"{type(exc).__name__}: {exc}", attempts, time.monotonic() + delay)
        self._failed[version] = failure
        log.error("driftloop: v%d cannot be served (%s); next try in %.0f s", version, failure.reason, delay)
        return failure

    def _load(self, version: int, current: LoadedModel | None, recheck: bool) -> LoadedModel:
        """``version`` ready to serve: the copy in memory (its stored files checked again when
        ``recheck``), else loaded, verified and smoke-tested. Raises when it cannot be served; a version
        that failed before raises its last failure until a retry is due (or ``recheck``)."""
        failed = self._failed.get(version)
        if failed is not None and not recheck and failed.retry_at > time.monotonic():
            raise RegistryError(failed.reason)
        recheck = recheck or failed is not None  # a version that failed proves itself again
        kept = (
            current
            if current is not None and current.version.version == version
            else self._cache.get(version)
        )
        try:
            if kept is not None:
                if recheck:
                    self.registry.read_file(self.registry.get(version), "model.txt")  # the hash, again
                model = kept
            else:
                model = load_version(self.registry, self.registry.get(version), self.inputs, self.kind)
        except Exception as exc:  # noqa: BLE001 - any failure means: not this version
            raise RegistryError(self._fail(version, exc).reason) from None
        self._failed.pop(version, None)
        self._cache = {version: model, **{k: v for k, v in self._cache.items() if k != version}}
        while len(self._cache) > 4:
            self._cache.pop(next(reversed(self._cache)))
        return model

    def _last_good(self, doc: AliasDoc, current: LoadedModel | None) -> tuple[LoadedModel | None, str]:
        """What answers when the registry's champion cannot: (model, how that is said)."""
        if current is not None:
            return current, f"v{current.version.version} answers (in memory since it last loaded)"
        for version in doc.past_champions():
            try:
                return self._load(
                    version, None, recheck=False
                ), f"v{version}, the last good champion, answers"
            except RegistryError:
                continue
        if self.packaged is not None:
            return self.packaged, f"the packaged model v{self.packaged.version.version} answers"
        return None, "no earlier champion loads: nothing answers"

    def refresh(self) -> bool:
        """Reload if the aliases changed (or a failed version's retry is due); return True when the
        served set changed."""
        raw, etag = self.registry.store.read_json_with_etag(self.registry.aliases_key)
        self.status.last_check = datetime.now(timezone.utc).isoformat()
        changed_aliases = etag is None or etag != self._alias_etag
        if not changed_aliases and not self._retry_due():
            return False
        self._alias_etag = etag
        doc = AliasDoc.model_validate(raw or {})
        problems: list[str] = []
        loaded: dict[str, LoadedModel] = {}
        degraded = None
        for alias in ("champion", "challenger"):
            version, current = doc.aliases.get(alias), getattr(self.models, alias)
            if version is None:
                continue
            try:
                loaded[alias] = self._load(version, current, recheck=changed_aliases)
            except RegistryError as exc:
                if alias == "champion":
                    loaded_model, how = self._last_good(doc, current)
                    if loaded_model is not None:
                        loaded["champion"] = loaded_model
                    degraded = f"champion v{version} cannot be served ({exc}): {how}"
                    problems.append(degraded)
                elif current is not None and current.version.version != version:
                    loaded["challenger"] = current  # the canary goes on with the challenger it had
                    problems.append(
                        f"challenger v{version} cannot be served ({exc}): v{current.version.version} goes on"
                    )
                else:
                    problems.append(f"challenger v{version} cannot be served ({exc}): no canary")
        if "champion" not in doc.aliases and self.packaged is not None:
            # an empty registry (or one not written yet) never replaces the model the bento carries
            loaded["champion"] = self.packaged
            degraded = (
                f"the registry names no champion of {self.registry.model_name}: the packaged model "
                f"v{self.packaged.version.version} answers"
            )
            problems.append(degraded)
        if degraded != self.status.degraded:
            self._report_health(degraded)
        self.status.problems, self.status.degraded = problems, degraded
        named = {*doc.aliases.values(), *doc.past_champions()}
        self._failed = {v: f for v, f in self._failed.items() if v in named}  # retry only what may serve
        new = ModelSet(champion=loaded.get("champion"), challenger=loaded.get("challenger"))
        changed = (_v(new.champion), _v(new.challenger)) != (
            _v(self.models.champion),
            _v(self.models.challenger),
        )
        self.models = new
        if changed:
            self.status.loaded_at = datetime.now(timezone.utc).isoformat()
            log.info("driftloop: serving champion %s, challenger %s", _v(new.champion), _v(new.challenger))
        return changed

    def _report_health(self, degraded: str | None) -> None:
        """Say in the store whether this model's service answers with a fallback: the monitor flow reads
        it and raises ``driftloop.serving.degraded`` (the service itself runs without Prefect)."""
        try:
            self.registry.store.write_json(
                health_key(self.registry.model_name),
                {
                    "degraded": degraded,
                    "at": datetime.now(timezone.utc).isoformat(),
                    "host": socket.gethostname(),
                },
            )
        except Exception as exc:  # noqa: BLE001 - a store that cannot be written must not stop serving
            log.warning("driftloop: could not record the service's health in the store: %s", exc)

    def use_packaged(self, path: Path) -> None:
        """Serve the model packaged in the bento while the registry has no champion that loads."""
        import json

        text = (path / "model.txt").read_bytes()
        smoke_test_in_child(text, f"packaged model {path.name}")
        booster = lgb.Booster(model_str=text.decode())
        transform = FittedTransform.from_json((path / "transform.json").read_text())
        meta = json.loads((path / "registry_version.json").read_text())
        self.packaged = LoadedModel(ModelVersion.model_validate(meta), booster, transform)
        if self.models.champion is None:
            self.models = ModelSet(champion=self.packaged)
            self.status.degraded = (
                f"the registry cannot be read or names no champion that loads: the packaged model "
                f"v{meta['version']} answers"
            )
            self.status.problems = [*self.status.problems, self.status.degraded]
            log.warning("driftloop: %s", self.status.degraded)

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
                problem = f"registry unreachable: {type(exc).__name__}: {exc}"
                if problem not in self.status.problems:  # what still serves keeps its reason
                    self.status.problems = [p for p in self.status.problems if "unreachable" not in p]
                    self.status.problems.append(problem)
                    log.warning("driftloop: %s", problem)

    def stop(self) -> None:
        self._stop.set()


def _v(model: LoadedModel | None) -> int | None:
    return model.version.version if model else None
