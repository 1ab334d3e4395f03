"""The prediction service for real: a `bentoml serve` process over a registry trained by the flow."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from tests.conftest import SESSION_DIR, SMALL

pytestmark = pytest.mark.integration
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "test-feedback-token"
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
MODEL = "flights-late-arrival"  # the settings' dataset config names it: the service serves it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serving_store(prefect_server):
    """A registry with a champion (v1) and a challenger (v2), trained by the real training flow."""
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.settings import Settings
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13

    store_dir = SESSION_DIR / "serving-store"
    old = os.environ.get("DRIFTLOOP_STORE_URI")
    os.environ["DRIFTLOOP_STORE_URI"] = str(store_dir)
    try:
        settings = Settings()
        land_nycflights13(open_store(settings), settings.sources_dir, months=[1, 2, 3])
        training(TrainingParams(**SMALL))
        second = training(TrainingParams(**{**SMALL, "seed": 3, "min_gain_lower": 0.5}))
        assert second.decision == "rejected"  # the gate never serves a model that did not beat the champion
        from tasks.registry.versions import Registry  # a canary is started by hand, as retraining would

        Registry(open_store(settings), "flights-late-arrival").set_alias(
            "challenger", second.version, reason="test: a canary", actor="test"
        )
    finally:
        os.environ["DRIFTLOOP_STORE_URI"] = old or ""
    return store_dir


def _start_server(
    store_dir: Path, ready_path: str = "/readyz", **serving_env: str
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "DRIFTLOOP_STORE_URI": str(store_dir),
        "DRIFTLOOP_SERVING__POLL_SECONDS": "0.3",
        # a home of its own: BentoML empties $BENTOML_HOME/prometheus_multiproc_dir when a server starts,
        # so a later server on a shared home would erase this one's metrics
        "BENTOML_HOME": str(SESSION_DIR / f"bentoml-home-{port}"),
        **{f"DRIFTLOOP_SERVING__{k.upper()}": v for k, v in serving_env.items()},
    }
    log = open(SESSION_DIR / f"bentoml-{port}.log", "wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "bentoml"),
            "serve",
            "bentos.service:Driftloop",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=Path(__file__).parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"bentoml serve did not become ready; see {log.name}")


def _kill_9(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its workers at once (circus starts each worker in a session of its own, so
    killing the process group alone leaves the workers serving)."""
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=20)
    proc.wait(timeout=20)


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


@pytest.fixture(scope="module")
def service(serving_store):
    proc, url = _start_server(
        serving_store,
        challenger_share="0.5",
        log_max_seconds="0.5",
        verdict_seconds="1",
        auth_token=TOKEN,
        feedback_token=FEEDBACK_TOKEN,
        max_request_bytes="1500000",  # 10,000 feedback items fit; 4,000 records do not
    )
    yield url
    _stop(proc)


def _test_rows(store_dir: Path, n: int) -> tuple[pl.DataFrame, list[dict]]:
    from tasks.core.settings import Settings
    from tasks.core.store import LocalStore
    from tasks.serving.schema import as_requests, input_contracts

    store = LocalStore(store_dir)
    key = next(k for k in store.list("snapshots") if k.endswith(".parquet"))
    config = Settings().load_dataset()
    frame = store.read_parquet(key).tail(n).select(list(input_contracts(config)))
    return frame, as_requests(frame, config)


def _registry(store_dir: Path):  # noqa: ANN202
    from tasks.core.store import LocalStore
    from tasks.registry.versions import Registry

    return Registry(LocalStore(store_dir), "flights-late-arrival")


def _offline(store_dir: Path, version: int, frame: pl.DataFrame) -> np.ndarray:
    registry = _registry(store_dir)
    mv = registry.get(version)
    return registry.load_booster(mv).predict(registry.load_transform(mv).to_matrix(frame))


def test_service_matches_the_offline_model(service, serving_store):
    frame, records = _test_rows(serving_store, 200)
    resp = httpx.post(f"{service}/predict_batch", json={"records": records}, headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert {a["model_version"] for a in answers} == {1, 2}  # both arms served
    offline = {v: _offline(serving_store, v, frame) for v in (1, 2)}
    thresholds = {v: _registry(serving_store).get(v).threshold for v in (1, 2)}
    assert 0 < thresholds[1] < 0.5 and thresholds[1] != thresholds[2]  # F1 on rare delays: well below 0.5
    for i, a in enumerate(answers):
        assert a["arm"] == ("champion" if a["model_version"] == 1 else "challenger")
        assert a["probability"] == pytest.approx(offline[a["model_version"]][i], abs=1e-9)
        # each version's label at its own threshold, chosen on validation when it was trained
        assert a["label"] == int(a["probability"] >= thresholds[a["model_version"]])
    single = httpx.post(f"{service}/predict", json={"record": records[0]}, headers=AUTH).json()
    assert single["probability"] == pytest.approx(offline[single["model_version"]][0], abs=1e-9)
    assert single["request_id"]


def test_columnar_batches_score_like_the_offline_model(service, serving_store):
    frame, records = _test_rows(serving_store, 300)
    columns = {k: [r[k] for r in records] for k in records[0]}
    resp = httpx.post(f"{service}/predict_columns", json={"columns": columns}, headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    offline = {v: _offline(serving_store, v, frame) for v in (1, 2)}
    assert len(out["probability"]) == 300 and set(out["model_version"]) == {1, 2}
    for i, (p, v) in enumerate(zip(out["probability"], out["model_version"])):
        assert p == pytest.approx(offline[v][i], abs=1e-9)
    bad = httpx.post(
        f"{service}/predict_columns",
        headers=AUTH,
        json={"columns": {**columns, "distance": [-1] + columns["distance"][1:]}},
    )
    assert bad.status_code == 400 and "column 'distance': rule >= 0 broken by 1 value(s)" in bad.text
    ragged = httpx.post(
        f"{service}/predict_columns", headers=AUTH, json={"columns": {**columns, "carrier": ["UA"]}}
    )
    assert ragged.status_code == 400 and "equal length" in ragged.text
    typo = httpx.post(
        f"{service}/predict_columns",
        headers=AUTH,
        json={"columns": {**columns, "carier": columns["carrier"]}},
    )
    assert typo.status_code == 400 and "carier" in typo.text


def _arrow(frame: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_ipc_stream(buf)
    return buf.getvalue()


def test_arrow_batches_score_like_the_offline_model_and_bad_ones_are_named(service, serving_store):
    frame, _ = _test_rows(serving_store, 300)
    ids = [f"row-{i}" for i in range(frame.height)]
    arrow = {**AUTH, "content-type": "application/vnd.apache.arrow.stream"}
    resp = httpx.post(
        f"{service}/predict_arrow",
        content=_arrow(frame.with_columns(pl.Series("correlation_id", ids))),
        headers=arrow,
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.apache.arrow.stream"
    out = pl.read_ipc_stream(resp.content)
    assert out.height == 300 and out["correlation_id"].to_list() == ids  # one answer per row, in order
    assert out["request_id"].n_unique() == 300 and set(out["model_version"]) == {1, 2}
    offline = {v: _offline(serving_store, v, frame) for v in (1, 2)}
    for i, (p, v) in enumerate(zip(out["probability"], out["model_version"])):
        assert p == pytest.approx(offline[v][i], abs=1e-9)

    def refused(body: bytes, headers: dict = arrow) -> httpx.Response:
        return httpx.post(f"{service}/predict_arrow", content=body, headers=headers, timeout=30)

    as_json = refused(_arrow(frame), {**AUTH, "content-type": "application/json"})
    assert as_json.status_code == 415 and "application/vnd.apache.arrow.stream" in as_json.text
    assert refused(_arrow(frame), {"content-type": arrow["content-type"]}).status_code == 401  # no token
    garbage = refused(b"not arrow at all")
    assert garbage.status_code == 400 and "not an Arrow IPC stream" in garbage.text
    missing = refused(_arrow(frame.drop("carrier")))
    assert missing.status_code == 400 and "carrier" in missing.text
    out_of_range = refused(_arrow(frame.with_columns(pl.lit(-1).alias("distance"))))
    assert out_of_range.status_code == 400 and "column 'distance'" in out_of_range.text
    wrong_type = refused(_arrow(frame.with_columns(pl.lit(1.5).alias("carrier"))))
    assert wrong_type.status_code == 400 and "column 'carrier'" in wrong_type.text
    as_text = refused(
        _arrow(frame.with_columns(pl.col("distance").cast(pl.String)))
    )  # "2402": JSON refuses it
    assert as_text.status_code == 400 and "column 'distance'" in as_text.text
    assert httpx.get(f"{service}/readyz").status_code == 200  # and it serves on
    assert httpx.request("GET", f"{service}/predict_arrow", headers=AUTH).status_code == 405
    documented = httpx.get(f"{service}/docs.json").json()["paths"]["/predict_arrow"]["post"]
    assert "application/vnd.apache.arrow.stream" in documented["requestBody"]["content"]
    assert {"200", "400", "401", "413", "415", "503"} <= set(documented["responses"])


def test_canary_keeps_a_caller_on_one_arm(service, serving_store):
    _, records = _test_rows(serving_store, 1)
    arms = {}
    for i in range(200):
        body = {"record": {**records[0], "routing_key": f"user-{i}"}}
        arms[i] = httpx.post(f"{service}/predict", json=body, headers=AUTH).json()["arm"]
    share = sum(a == "challenger" for a in arms.values()) / len(arms)
    assert 0.35 < share < 0.65
    again = [
        httpx.post(
            f"{service}/predict", json={"record": {**records[0], "routing_key": f"user-{i}"}}, headers=AUTH
        ).json()["arm"]
        for i in range(20)
    ]
    assert again == [arms[i] for i in range(20)]


def test_bad_input_is_a_4xx_naming_the_field_and_serving_goes_on(service, serving_store):
    _, records = _test_rows(serving_store, 1)
    good = records[0]

    def post(path: str, **kw) -> httpx.Response:
        return httpx.post(f"{service}/{path}", headers={**AUTH, **kw.pop("headers", {})}, timeout=30, **kw)

    missing = post("predict", json={"record": {k: v for k, v in good.items() if k != "carrier"}})
    assert missing.status_code == 400 and "carrier" in missing.text and "missing" in missing.text
    wrong_type = post("predict", json={"record": {**good, "distance": "far"}})
    assert wrong_type.status_code == 400 and "distance" in wrong_type.text
    out_of_range = post("predict", json={"record": {**good, "distance": -5}})
    assert out_of_range.status_code == 400 and "column 'distance': rule >= 0" in out_of_range.text
    bad_time = post("predict", json={"record": {**good, "time_hour": "yesterday"}})
    assert bad_time.status_code == 400 and "time_hour" in bad_time.text
    typo = post("predict", json={"record": {**good, "carier": "UA"}})
    assert typo.status_code == 400 and "carier" in typo.text
    malformed = post("predict", content=b'{"record": {', headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "json" in malformed.text.lower()
    empty = post("predict_batch", json={"records": []})
    assert empty.status_code == 400 and "at least 1 item" in empty.text
    # what the OpenAPI document declares is what is accepted: no unknown top-level fields, no "5" for
    # 5, no Unix seconds for a time, no numbers a 64-bit column cannot hold, no lone surrogates
    extra_key = post("predict", json={"record": good, "records": []})
    assert extra_key.status_code == 400 and "records" in extra_key.text and "Extra inputs" in extra_key.text
    for field, value in [
        ("distance", "2402"),
        ("time_hour", 1357034400),
        ("distance", 2**70),
    ]:
        body = json.dumps({"record": {**good, field: value}}).encode()
        refused = post("predict", content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 400 and field in refused.text, (field, value, refused.text)
    twice = json.dumps(good)[:-1] + ', "carrier": "ZZ"}'  # "carrier" named twice in one record
    for path, body in [("predict", f'{{"record": {twice}}}'), ("predict_batch", f'{{"records": [{twice}]}}')]:
        refused = post(path, content=body.encode(), headers={"content-type": "application/json"})
        assert refused.status_code == 400 and "'carrier' twice" in refused.text, (path, refused.text)
    columns = '{"columns": {"carrier": ["UA"], "carrier": ["ZZ"]}}'
    refused = post("predict_columns", content=columns.encode(), headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "'carrier' twice" in refused.text, refused.text
    lone_surrogate = json.dumps({"record": {**good, "carrier": "\ud800"}}).encode()  # escaped, ASCII
    refused = post("predict", content=lone_surrogate, headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "Invalid JSON" in refused.text
    not_json = post("predict", content=json.dumps({"record": good}), headers={"content-type": "text/plain"})
    assert not_json.status_code == 415 and "JSON" in not_json.text
    unsaid = httpx.post(f"{service}/predict", content=json.dumps({"record": good}).encode(), headers=AUTH)
    assert unsaid.status_code == 415, unsaid.text  # a body without its Content-Type is not guessed at
    huge = post("predict_batch", json={"records": [good] * 4000})
    assert huge.status_code == 413 and "MAX_REQUEST_BYTES" in huge.text
    not_binary = httpx.post(
        f"{service}/feedback", json={"items": [{"request_id": "x", "outcome": 2}]}, headers=FEEDBACK_AUTH
    )
    assert not_binary.status_code == 400 and "outcome" in not_binary.text
    for outcome, correction in [(True, False), (1, 0)]:  # booleans and numbers are not interchangeable
        item = {"request_id": "x", "outcome": outcome, "correction": correction}
        strict = httpx.post(f"{service}/feedback", json={"items": [item]}, headers=FEEDBACK_AUTH)
        assert strict.status_code == 400, strict.text
    no_token = httpx.post(f"{service}/predict", json={"record": good})
    assert no_token.status_code == 401
    # unknown categories and missing optional fields are handled as in training, not rejected
    lenient = post("predict", json={"record": {**good, "carrier": "ZZ", "temp": None, "plane_seats": None}})
    assert lenient.status_code == 200 and 0 < lenient.json()["probability"] < 1
    assert post("predict", json={"record": good}).status_code == 200


def test_the_contract_refuses_the_same_values_in_the_same_words_everywhere(service, serving_store, tmp_path):
    """Each kind of value the input contract refuses, sent to every scoring endpoint: the same 400
    naming the column and the rule; the same values in a landed batch are quarantined under that rule;
    the refusals reach the model's rejection log, which monitoring counts as data quality."""
    from tasks.core.contract_rules import CONTROL_RULE, NAIVE_RULE
    from tasks.core.logs import REJECTIONS, read_log
    from tasks.core.store import LocalStore
    from tasks.data.validate import validate_batch
    from tasks.serving.schema import input_schema

    frame, records = _test_rows(serving_store, 2)
    good = records[0]
    violations = [
        ("origin", "ZZZ", "one of ['EWR', 'JFK', 'LGA']"),
        ("carrier", "ua", "matches pattern '^[A-Z0-9]{2}$'"),
        ("plane_manufacturer", "B" * 300, "at most 256 characters"),
        ("plane_manufacturer", "BOE\u0000ING", CONTROL_RULE),
        ("plane_manufacturer", "BOE\u202eING", CONTROL_RULE),
        ("distance", -5, ">= 0"),
        ("time_hour", "2013-03-01T09:00:00", NAIVE_RULE),
    ]
    registry = _registry(serving_store)
    config = registry.load_config(registry.get(1), os.environ)
    schema = {**input_schema(config), "time_hour": pl.String}
    before = read_log(LocalStore(serving_store), REJECTIONS, MODEL).height
    for column, value, rule in violations:
        bad = {**good, column: value}
        answers = {
            "/predict": httpx.post(f"{service}/predict", json={"record": bad}, headers=AUTH),
            "/predict_batch": httpx.post(
                f"{service}/predict_batch", json={"records": [good, bad]}, headers=AUTH
            ),
            "/predict_columns": httpx.post(
                f"{service}/predict_columns",
                json={"columns": {k: [good[k], bad[k]] for k in good}},
                headers=AUTH,
            ),
            "/predict_arrow": httpx.post(
                f"{service}/predict_arrow",
                content=_arrow(pl.DataFrame([good, bad], schema=schema)),
                headers={**AUTH, "content-type": "application/vnd.apache.arrow.stream"},
            ),
        }
        for path, answer in answers.items():
            assert answer.status_code == 400, (path, column, answer.text)
            assert column in answer.text and rule in answer.text, (path, column, answer.text)
    # BentoML validates the time's type before the service sees a record: 6 kinds x 4 endpoints, the
    # time's on the two frame endpoints
    deadline = time.time() + 10
    while read_log(LocalStore(serving_store), REJECTIONS, MODEL).height < before + 6 * 4 + 2:
        assert time.time() < deadline, "the refusals did not reach the rejection log"
        time.sleep(0.2)
    assert httpx.post(f"{service}/predict", json={"record": good}, headers=AUTH).status_code == 200

    # a landed batch with the same values: quarantined under the same rules, in the same words
    raw = LocalStore(serving_store).read_parquet("raw/flights/year=2013/month=01/part-0.parquet").head(4)
    landed = raw.with_columns(
        pl.Series("origin", ["ZZZ", *raw["origin"][1:]]),
        pl.Series("carrier", [raw["carrier"][0], "ua", *raw["carrier"][2:]]),
        pl.Series("tailnum", [*raw["tailnum"][:2], "N" * 300, "N1\u0000A"]),
        pl.Series("distance", [*raw["distance"][:3], -5]),
        pl.lit(2013, dtype=pl.Int64).alias("year"),  # hive partition values, from the batch's path
        pl.lit(1, dtype=pl.Int64).alias("month"),
    )
    contract = config.tables["flights"].contract
    _, report = validate_batch(landed, contract, "flights", "a batch", whole=False)
    found = {(f.column, f.rule) for f in report.failures}
    for column, _, rule in violations[:-1]:
        assert (column.replace("plane_manufacturer", "tailnum"), rule) in found, (column, report.summary())


def _coalesced(url: str) -> tuple[float, float]:
    """(scoring calls, calls of one request) of the /predict coalescer, from the service's metrics."""
    metrics = httpx.get(f"{url}/metrics").text
    count = re.search(r"^driftloop_coalesced_requests_count (\S+)$", metrics, re.M)
    alone = re.search(r'^driftloop_coalesced_requests_bucket\{le="1.0"\} (\S+)$', metrics, re.M)
    return (float(count.group(1)), float(alone.group(1))) if count and alone else (0.0, 0.0)


def test_single_requests_scored_together_each_get_their_own_answer(service, serving_store):
    """Concurrent /predict requests are scored in shared batches (one transform, one log record), yet
    each caller gets the answer it would get alone: the offline model's probability for its own row, its
    own request id; a refused row among them gets its own 400 and is the only one counted as refused."""
    import asyncio

    from tasks.core.logs import REJECTIONS, read_log
    from tasks.core.store import LocalStore

    frame, records = _test_rows(serving_store, 60)
    offline = {v: _offline(serving_store, v, frame) for v in (1, 2)}
    bad = {3: ("origin", "QQQ"), 20: ("distance", -7), 41: ("carrier", "uq")}  # values no other test sends
    bodies = [{"record": {**r, bad[i][0]: bad[i][1]} if i in bad else r} for i, r in enumerate(records)]

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(headers=AUTH, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(client.post(f"{service}/predict", json=b) for b in bodies))

    def refused_here() -> int:  # this test's refusals, by their values (other tests' may still be shipping)
        logged = read_log(LocalStore(serving_store), REJECTIONS, MODEL)
        if "reason" not in logged.columns:  # nothing refused yet
            return 0
        return int(logged["reason"].str.contains(r"\['QQQ'\]|\[-7\]|\['uq'\]").sum())

    assert refused_here() == 0
    for attempt in range(5):  # until some requests did share a batch (concurrency is the OS's to give)
        calls_before, alone_before = _coalesced(service)
        answers = asyncio.run(send_all())
        ids = set()
        for i, answer in enumerate(answers):
            if i in bad:
                assert answer.status_code == 400, answer.text
                assert bad[i][0] in answer.text, answer.text
                continue
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["probability"] == pytest.approx(offline[body["model_version"]][i], abs=1e-9)
            ids.add(body["request_id"])
        assert len(ids) == len(records) - len(bad)  # one id per caller, never shared
        calls, alone = _coalesced(service)
        if (calls - calls_before) - (alone - alone_before) > 0:  # some scoring call held several requests
            break
    else:
        pytest.fail("60 concurrent requests never shared a scoring call in 5 attempts")
    deadline = time.time() + 10
    expected = len(bad) * (attempt + 1)  # each bad row refused once per attempt, alone
    while refused_here() < expected:
        assert time.time() < deadline, "the refusals did not reach the rejection log"
        time.sleep(0.2)
    time.sleep(1.5)  # shipped every 0.5 s: a row refused twice (once in its batch) would have landed
    assert refused_here() == expected


def test_predictions_and_feedback_are_logged(service, serving_store):
    from tasks.core.logs import outcome_per_request, read_log
    from tasks.core.store import LocalStore

    _, records = _test_rows(serving_store, 3)
    mine = [f"caller-{i}-{time.time()}" for i in range(3)]
    answers = []
    for cid, rec in zip(mine, records):
        resp = httpx.post(f"{service}/predict", json={"record": {**rec, "correlation_id": cid}}, headers=AUTH)
        assert resp.status_code == 200
        answers.append(resp.json())
    ids = [a["request_id"] for a in answers]  # issued by the service, never the caller's
    assert [a["correlation_id"] for a in answers] == mine and not set(ids) & set(mine)
    stolen = httpx.post(
        f"{service}/predict", json={"record": {**records[0], "request_id": ids[0]}}, headers=AUTH
    )  # a caller cannot pick (or overwrite) a request id
    assert stolen.status_code == 400 and "request_id" in stolen.text

    def feedback(items, headers=FEEDBACK_AUTH):
        return httpx.post(f"{service}/feedback", headers=headers, json={"items": items})

    assert (
        feedback([{"request_id": ids[0], "outcome": 1}], headers=AUTH).status_code == 401
    )  # predict's token
    assert feedback([{"request_id": ids[0], "outcome": 1}], headers={}).status_code == 401
    forged = ids[2][:-1] + ("0" if ids[2][-1] != "0" else "1")
    fb = feedback(
        [
            {"request_id": ids[0], "outcome": 1},
            {"request_id": ids[1], "outcome": 0},
            {"request_id": "never-seen", "outcome": 1},
            {"request_id": forged, "outcome": 1},
            {"request_id": mine[2], "outcome": 1},
        ]
    )
    assert fb.status_code == 200
    assert fb.json()["accepted"] == 2 and [r["request_id"] for r in fb.json()["rejected"]] == [
        "never-seen",
        forged,
        mine[2],
    ]
    assert "not a request id this service issued" in fb.json()["rejected"][0]["reason"]
    # a repeated, contradicting outcome does not rewrite the label, and the caller is told; an explicit
    # correction does
    again = feedback([{"request_id": ids[0], "outcome": 0}]).json()
    assert again["accepted"] == 0 and [i["request_id"] for i in again["ignored"]] == [ids[0]]
    assert again["ignored"][0]["reason"].startswith("ignored: first label stands")
    assert feedback([{"request_id": ids[1], "outcome": 1, "correction": True}]).json()["accepted"] == 1
    # one outcome per id per request: 10,000 copies of one id are a 400 naming it, and nothing is logged
    flood = feedback([{"request_id": ids[2], "outcome": 1}] * 10_000)
    assert flood.status_code == 400 and "1 request id(s) repeated" in flood.text and ids[2][:64] in flood.text
    store = LocalStore(serving_store)
    deadline = time.time() + 10
    while time.time() < deadline:
        preds, feedback_log = read_log(store, "predictions", MODEL), read_log(store, "feedback", MODEL)
        if preds.height and set(ids) <= set(preds["request_id"]) and feedback_log.height >= 4:
            break
        time.sleep(0.3)
    logged = preds.filter(pl.col("request_id").is_in(ids))
    assert logged.height == 3 and set(logged["arm"]) <= {"champion", "challenger"}
    assert sorted(logged["correlation_id"]) == sorted(mine)
    assert logged["carrier"].to_list() == [r["carrier"] for r in records]  # raw inputs kept for monitoring
    assert any("/date=" in k and "/hour=" in k for k in store.list(f"predictions/{MODEL}"))
    mine_fb = feedback_log.filter(pl.col("request_id").is_in(ids))
    assert mine_fb.height == 4 and set(mine_fb["source"]) == {"feedback-token"}
    outcomes = dict(outcome_per_request(mine_fb).collect().iter_rows())
    assert outcomes == {ids[0]: 1, ids[1]: 1}  # first outcome kept for ids[0]; ids[1] corrected

    # lineage: from the request id back to the model, its run, snapshot and raw data
    from flows.lineage import LineageParams, lineage

    os.environ["DRIFTLOOP_STORE_URI"], previous = str(serving_store), os.environ["DRIFTLOOP_STORE_URI"]
    try:
        trace = lineage(LineageParams(request_id=ids[0]))
    finally:
        os.environ["DRIFTLOOP_STORE_URI"] = previous
    assert trace["outcome"] == 1 and trace["model"]["version"] == answers[0]["model_version"]  # the one
    assert trace["model"]["wandb_run"] and trace["model"]["git_commit"] and trace["model"]["snapshot_id"]
    assert any(k.startswith("raw/flights/year=2013/month=") for k in trace["model"]["raw_sources"]["flights"])
    assert trace["model"]["raw_sources"]["planes"][0].startswith("raw/planes/sql-")
    assert {h["alias"] for h in trace["model"]["alias_history"]} & {
        "champion",
        "challenger",
    }  # its promotions


def test_metrics_and_status(service):
    metrics = httpx.get(f"{service}/metrics").text
    assert (
        "driftloop_predictions" in metrics
        and 'model_version="1"' in metrics
        and 'arm="challenger"' in metrics
    )
    # every series the Grafana dashboard and the alert rules query is one this service exports
    from tests.code.test_cloud_files import dashboard_metric_names

    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", metrics, re.M))
    queried = dashboard_metric_names()
    assert {
        "driftloop_predictions_total",
        "driftloop_scoring_seconds_bucket",
        "bentoml_service_request_total",
    } <= queried
    assert queried <= exported, f"dashboard queries series the service does not export: {queried - exported}"
    status = httpx.post(f"{service}/model_status", headers=AUTH).json()
    assert status["champion"] == 1 and status["challenger"] == 2 and status["problems"] == []
    spec = httpx.get(f"{service}/docs.json").json()
    assert "/predict" in spec["paths"] and "/feedback" in spec["paths"]


def test_hot_swap_under_load_and_a_corrupt_version_is_refused(service, serving_store):
    from tasks.core.store import LocalStore
    from tasks.registry.versions import NewVersion, Registry

    registry = Registry(LocalStore(serving_store), "flights-late-arrival")
    _, records = _test_rows(serving_store, 1)
    from tasks.serving.routing import assign_arm

    key = next(f"caller-{i}" for i in range(100) if assign_arm(f"caller-{i}", 0.5) == "champion")
    body = {"record": {**records[0], "routing_key": key}}
    first = httpx.post(f"{service}/predict", json=body, headers=AUTH).json()
    assert first["arm"] == "champion"
    errors, versions, stop = [], [], threading.Event()

    def hammer() -> None:
        with httpx.Client(headers=AUTH, timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{service}/predict", json=body)
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    versions.append(r.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    [t.start() for t in threads]
    try:
        time.sleep(1)
        registry.set_alias("champion", 2, reason="test promotion", actor="test")
        registry.set_alias("challenger", 1, reason="test", actor="test")
        deadline = time.time() + 10
        while time.time() < deadline and (not versions or versions[-1] != 2):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        [t.join() for t in threads]
    assert errors == []  # not one request failed during the swap
    assert versions[0] == 1 and versions[-1] == 2

    # a version whose model file is corrupt is never swapped in; the service says why
    mv = registry.register(
        {
            "model.txt": b"this is not a LightGBM model",
            "transform.json": registry.read_file(registry.get(2), "transform.json"),
        },
        NewVersion.model_validate(registry.get(2).model_dump(include=set(NewVersion.model_fields))),
    )
    registry.set_alias("champion", mv.version, reason="bad model on purpose", actor="test")
    deadline = time.time() + 10
    status = {}
    while time.time() < deadline:
        status = httpx.post(f"{service}/model_status", headers=AUTH).json()
        if status["problems"]:
            break
        time.sleep(0.2)
    assert status["champion"] == 2 and f"champion v{mv.version} cannot be served" in status["problems"][0]
    assert status["degraded"].endswith("v2 answers (in memory since it last loaded)"), status
    ready = httpx.get(f"{service}/readyz")  # ready, for it answers, and saying with what
    assert ready.status_code == 200 and ready.json()["degraded"] == status["degraded"]
    assert httpx.post(f"{service}/predict", json=body, headers=AUTH).json()["model_version"] == 2
    # the broken version is not tried again on every poll (0.3 s here) but after a backoff: one line
    time.sleep(3)
    log = (SESSION_DIR / f"bentoml-{service.rsplit(':', 1)[1]}.log").read_text()
    assert log.count(f"v{mv.version} cannot be served") == 1, log[-3000:]

    # a truncated model file: LightGBM aborts the process that loads it ("Model format error"), so
    # the service tries it in a child process first; it keeps serving, names the version, never restarts
    registry.set_alias("champion", 2, reason="restore", actor="test")
    text = registry.read_file(registry.get(1), "model.txt")
    truncated = registry.register(
        {
            "model.txt": text[: len(text) // 5],
            "transform.json": registry.read_file(registry.get(1), "transform.json"),
        },
        NewVersion.model_validate(registry.get(1).model_dump(include=set(NewVersion.model_fields))),
    )
    before = httpx.post(f"{service}/model_status", headers=AUTH).json()
    registry.set_alias("challenger", truncated.version, reason="truncated model on purpose", actor="test")
    answers, deadline = [], time.time() + 20
    while time.time() < deadline:
        answers.append(httpx.post(f"{service}/predict", json=body, headers=AUTH, timeout=10))
        status = httpx.post(f"{service}/model_status", headers=AUTH).json()
        if any(f"challenger v{truncated.version}" in p for p in status["problems"]):
            break
        time.sleep(0.2)
    assert any(f"challenger v{truncated.version} cannot be served" in p for p in status["problems"]), status
    assert "the model file does not load" in " ".join(status["problems"])
    assert all(a.status_code == 200 for a in answers)
    assert httpx.post(f"{service}/predict", json=body, headers=AUTH).json()["model_version"] in (1, 2)
    assert status["loaded_at"] == before["loaded_at"]  # the same worker: no crash, no restart
    assert status["predictions_logged"] >= before["predictions_logged"]
    registry.set_alias("champion", 1, reason="restore", actor="test")
    registry.set_alias("challenger", 2, reason="restore", actor="test")


def test_shadow_mode_answers_with_the_champion_and_scores_the_challenger(serving_store):
    frame, records = _test_rows(serving_store, 20)
    proc, url = _start_server(serving_store, mode="shadow", challenger_share="0.5")
    try:
        answers = httpx.post(f"{url}/predict_batch", json={"records": records}, timeout=30).json()
    finally:
        _stop(proc)
    champion, challenger = _offline(serving_store, 1, frame), _offline(serving_store, 2, frame)
    assert {a["arm"] for a in answers} == {"champion"} and {a["shadow_version"] for a in answers} == {2}
    assert [a["probability"] for a in answers] == pytest.approx(list(champion), abs=1e-9)
    assert [a["shadow_probability"] for a in answers] == pytest.approx(list(challenger), abs=1e-9)


def test_a_canary_logs_both_models_scores_for_a_paired_comparison(serving_store):
    """Each arm answers its own callers; the log carries the other arm's score of the same row."""
    from tasks.core.logs import CANARY_COLUMNS, read_log
    from tasks.core.store import LocalStore

    frame, records = _test_rows(serving_store, 40)
    ids = [f"paired-{i}" for i in range(len(records))]
    batch = [{**r, "correlation_id": i, "routing_key": i} for r, i in zip(records, ids)]
    proc, url = _start_server(serving_store, mode="canary", challenger_share="0.5")
    try:
        answers = httpx.post(f"{url}/predict_batch", json={"records": batch}, timeout=30).json()
        columns = httpx.post(
            f"{url}/predict_columns",
            json={"columns": {c: [r[c] for r in records] for c in records[0]}},
            timeout=30,
        ).json()
    finally:
        _stop(proc)  # a graceful stop flushes the log
    assert {a["arm"] for a in answers} == {"champion", "challenger"}
    assert all(a["shadow_version"] is None for a in answers)  # the other score is logged, not returned
    issued = [a["request_id"] for a in answers]
    assert [a["correlation_id"] for a in answers] == ids
    logged = read_log(
        LocalStore(serving_store), "predictions", MODEL, CANARY_COLUMNS, request_ids=issued + columns["ids"]
    )
    scores = {1: _offline(serving_store, 1, frame), 2: _offline(serving_store, 2, frame)}
    for request_ids in (issued, columns["ids"]):
        rows = logged.filter(pl.col("request_id").is_in(request_ids)).sort(
            pl.col("request_id").replace_strict(
                {r: k for k, r in enumerate(request_ids)}, return_dtype=pl.Int64
            )
        )
        assert rows.height == len(records)
        assert set(zip(rows["model_version"], rows["paired_version"])) == {(1, 2), (2, 1)}
        for row, k in zip(rows.iter_rows(named=True), range(rows.height)):
            assert row["probability"] == pytest.approx(scores[row["model_version"]][k], abs=1e-9)
            assert row["paired_probability"] == pytest.approx(scores[row["paired_version"]][k], abs=1e-9)


def test_promotion_and_rollback_flows_reach_the_live_service(service, serving_store, monkeypatch):
    from flows.lifecycle import PromoteParams, RollbackParams, promote, rollback

    monkeypatch.setenv("DRIFTLOOP_STORE_URI", str(serving_store))

    def champion_served(expected: int) -> bool:
        deadline = time.time() + 10
        while time.time() < deadline:
            if httpx.post(f"{service}/model_status", headers=AUTH).json()["champion"] == expected:
                return True
            time.sleep(0.2)
        return False

    start = httpx.post(f"{service}/model_status", headers=AUTH).json()["champion"]
    other = 2 if start == 1 else 1
    promote(PromoteParams(version=other, reason="test", actor="test"))
    assert champion_served(other)
    rollback(RollbackParams(reason="test rollback", actor="test"))
    assert champion_served(start)


def test_kill_9_mid_stream_loses_no_acknowledged_prediction_or_label(serving_store, monkeypatch):
    """1,000 predictions from 4 clients (each answered one gets feedback), the whole service killed with
    SIGKILL mid-stream, then started again: every prediction and every label that got a 200 is in the
    store's log exactly once (the spool made it durable before the answer; the restarted service
    ships the dead worker's spool; a segment shipped twice overwrites itself)."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.core.logs import read_log
    from tasks.core.store import LocalStore

    store = LocalStore(serving_store)

    def logged_ids(kind: str) -> pl.Series:
        frame = read_log(store, kind, MODEL, ["request_id"])
        return frame["request_id"] if frame.height else pl.Series("request_id", [], dtype=pl.String)

    before = set(logged_ids("predictions"))
    proc, url = _start_server(serving_store, log_max_seconds="1", challenger_share="0")
    _, records = _test_rows(serving_store, 250)
    answered: list[str] = []
    labelled: list[str] = []

    def client(offset: int) -> None:
        with httpx.Client(timeout=10) as http:
            for i in range(250):
                try:
                    resp = http.post(f"{url}/predict", json={"record": records[(offset + i) % 250]})
                    if resp.status_code != 200:
                        continue
                    rid = resp.json()["request_id"]
                    answered.append(rid)
                    fb = http.post(f"{url}/feedback", json={"items": [{"request_id": rid, "outcome": 1}]})
                    if fb.status_code == 200 and fb.json()["accepted"] == 1:
                        labelled.append(rid)
                except httpx.HTTPError:
                    return  # the service is gone

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, k * 60) for k in range(4)]
        while len(answered) < 500:
            time.sleep(0.01)
        _kill_9(proc)  # no shutdown hook, no flush: the processes are just gone
        for f in futures:
            f.result()
    assert 500 <= len(answered) < 1000, "the kill came mid-stream"
    proc, url = _start_server(serving_store, log_max_seconds="0.3")
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if set(answered) <= set(logged_ids("predictions")):
                break
            time.sleep(0.5)
    finally:
        _stop(proc)
    logged = logged_ids("predictions")
    new = logged.filter(~logged.is_in(list(before)))
    assert set(answered) <= set(new), f"{len(set(answered) - set(new))} acknowledged predictions lost"
    assert new.is_duplicated().sum() == 0, "a prediction was logged twice"
    fed = logged_ids("feedback")
    assert set(labelled) <= set(fed), f"{len(set(labelled) - set(fed))} acknowledged labels lost"
    assert fed.filter(fed.is_in(labelled)).is_duplicated().sum() == 0, "a label was logged twice"

    # the compaction flow (while the module's service keeps shipping into the same store): one file
    # per hour today, and still every acknowledged prediction exactly once
    from flows.compaction import compact_logs
    from flows.schemas import CompactParams

    monkeypatch.setenv("DRIFTLOOP_STORE_URI", str(serving_store))
    predictions, _, _ = compact_logs(CompactParams(model_name=MODEL))  # predictions, feedback, rejections
    assert predictions.files_before > predictions.files_after >= 1
    logged = logged_ids("predictions")
    assert set(answered) <= set(logged) and logged.filter(logged.is_in(answered)).is_duplicated().sum() == 0


def _serve_bento(cli: str, tag: str, env: dict, where: Path) -> tuple[subprocess.Popen, str]:
    """``bentoml serve`` of an imported bento (its log appended to ``where``/bento.log), once ready."""
    port = _free_port()
    with open(where / "bento.log", "ab") as log:
        proc = subprocess.Popen(
            [cli, "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
            cwd=where,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return proc, url


def test_package_flow_builds_a_bento_that_serves_elsewhere_with_the_registry_down(
    serving_store, monkeypatch, tmp_path
):
    """The package flow's exported bento, imported into a fresh BentoML home and served with the store
    unreachable (nothing listens where S3 should be): ready, answering with its packaged model,
    exactly as the offline model scores."""
    from flows.package import PackageParams, package
    from tasks.core.store import LocalStore

    monkeypatch.setenv("DRIFTLOOP_STORE_URI", str(serving_store))
    bento = package(PackageParams(ref="champion"))
    assert bento.bento_tag.endswith(":v1") and bento.model_tag == "flights-late-arrival:v1"
    store = LocalStore(serving_store)
    assert store.exists(bento.export_key) and len(store.read_bytes(bento.export_key)) > 10_000
    dockerfile = Path(bento.dockerfile).read_text()
    assert "FROM" in dockerfile and "python" in dockerfile.lower()
    import bentoml

    built = bentoml.get(bento.bento_tag)
    assert [str(m.tag) for m in built.info.all_models] == ["flights-late-arrival:v1"]
    readme = (Path(built.path) / "README.md").read_text()  # the bento's README is the model card
    assert "# Model card: flights-late-arrival" in readme and "## What drives the score" in readme

    elsewhere = tmp_path / "bentoml-elsewhere"
    cli = str(Path(sys.executable).parent / "bentoml")
    env = {**os.environ, "BENTOML_HOME": str(elsewhere), "DRIFTLOOP_BENTOML_HOME": str(elsewhere)}
    exported = serving_store / bento.export_key
    subprocess.run([cli, "import", str(exported)], env=env, check=True, capture_output=True, timeout=120)
    env |= {
        "DRIFTLOOP_STORE_URI": "s3://unreachable/driftloop",
        "DRIFTLOOP_S3__ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        "DRIFTLOOP_S3__ACCESS_KEY_ID": "x",
        "DRIFTLOOP_S3__SECRET_ACCESS_KEY": "x",
        "DRIFTLOOP_SERVING__SPOOL_DIR": str(tmp_path / "spool"),
    }
    proc, url = _serve_bento(cli, bento.bento_tag, env, tmp_path)
    try:
        frame, records = _test_rows(serving_store, 50)
        resp = httpx.post(f"{url}/predict_batch", json={"records": records}, timeout=30)
        assert resp.status_code == 200, (resp.text, (tmp_path / "bento.log").read_text()[-3000:])
        served = np.array([a["probability"] for a in resp.json()])
        assert {a["model_version"] for a in resp.json()} == {1}
        np.testing.assert_allclose(served, _offline(serving_store, 1, frame), rtol=1e-9)
        status = httpx.post(f"{url}/model_status", timeout=10).json()
        assert status["champion"] == 1, status
        assert str(elsewhere) not in json.dumps(status)  # no filesystem paths in answers
        assert "unreachable" not in json.dumps(status) and "127.0.0.1" not in json.dumps(status)
    finally:
        _stop(proc)

    # a store that is reachable but empty (a bento started with the default, local store): the packaged
    # model keeps answering, poll after poll, and the service says why
    env = {k: v for k, v in env.items() if not k.startswith("DRIFTLOOP_S3__")}
    env |= {"DRIFTLOOP_STORE_URI": str(tmp_path / "empty-store"), "DRIFTLOOP_SERVING__POLL_SECONDS": "0.3"}
    proc, url = _serve_bento(cli, bento.bento_tag, env, tmp_path)
    try:
        time.sleep(2)  # several polls of the empty registry
        resp = httpx.post(f"{url}/predict", json={"record": records[0]}, timeout=30)
        assert resp.status_code == 200 and resp.json()["model_version"] == 1, resp.text
        status = httpx.post(f"{url}/model_status", timeout=10).json()
        assert status["champion"] == 1 and "packaged model v1 answers" in status["degraded"], status
        assert str(tmp_path) not in json.dumps(status)
        assert httpx.get(f"{url}/readyz").json()["degraded"] == status["degraded"]
    finally:
        _stop(proc)


def test_a_tampered_champion_never_takes_the_service_dark(
    serving_store, tmp_path, prefect_server, monkeypatch
):
    """Under load, the champion's stored file is changed: the next alias change re-checks it, the copy
    in memory keeps answering (0 failed requests) and the service says it is degraded; after a restart
    the tampered champion is refused and the last good champion from the registry answers."""
    import shutil

    from tasks.core.store import LocalStore
    from tasks.registry.versions import Registry

    store_dir = tmp_path / "store"
    shutil.copytree(serving_store / "registry", store_dir / "registry")
    shutil.copytree(serving_store / "state", store_dir / "state", dirs_exist_ok=True)
    registry = Registry(LocalStore(store_dir), MODEL)
    registry.set_alias("challenger", None, reason="test: no canary", actor="test")
    registry.set_alias("champion", 2, reason="test: v2 replaces v1", actor="test")
    _, records = _test_rows(serving_store, 1)
    proc, url = _start_server(store_dir)
    errors, versions, stop = [], [], threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/predict", json={"record": records[0]})
                (
                    versions.append(r.json()["model_version"])
                    if r.status_code == 200
                    else errors.append(r.text)
                )

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    [t.start() for t in threads]
    try:
        time.sleep(1)
        model_file = store_dir / registry.get(2).files["model.txt"]
        model_file.write_bytes(model_file.read_bytes().replace(b"Tree=0", b"Tree=0\n", 1))
        registry.set_alias("challenger", None, reason="test: any alias change re-checks", actor="test")
        deadline, status = time.time() + 10, {}
        while time.time() < deadline and not status.get("degraded"):
            status = httpx.post(f"{url}/model_status").json()
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        [t.join() for t in threads]
    _stop(proc)
    assert errors == [] and set(versions) == {2}  # the verified copy in memory answered throughout
    assert "SHA-256" in status["degraded"] and "v2 answers (in memory" in status["degraded"], status

    proc, url = _start_server(store_dir)  # a restart: v2's file is refused, v1 (champion before) answers
    try:
        status = httpx.post(f"{url}/model_status").json()
        assert status["champion"] == 1 and "v1, the last good champion, answers" in status["degraded"], status
        assert httpx.post(f"{url}/predict", json={"record": records[0]}).json()["model_version"] == 1
        assert httpx.get(f"{url}/readyz").json()["degraded"] == status["degraded"]
        assert str(store_dir) not in json.dumps(status)  # no store location in an answer
    finally:
        _stop(proc)
    # the service recorded it in the store; the monitor flow raises the event a notification follows
    from flows.monitoring import serving_degraded
    from tasks.core.context import RunContext
    from tasks.core.settings import Settings
    from tasks.serving.watcher import health_key
    from tests.integration.test_lifecycle import _events

    assert LocalStore(store_dir).read_json(health_key(MODEL))["degraded"] == status["degraded"]
    monkeypatch.setenv("DRIFTLOOP_STORE_URI", str(store_dir))
    assert serving_degraded(MODEL, RunContext.build(Settings())) == status["degraded"]
    (event,) = _events(prefect_server.cfg.api_url, "driftloop.serving.degraded", MODEL, 1)
    assert event["payload"]["reason"] == status["degraded"]


def test_monitoring_and_the_canary_judge_what_the_real_service_logged(service, serving_store, monkeypatch):
    """Traffic and feedback through the running service, then the monitor and canary-decision flows on
    the store it wrote: a control window from the training period starts nothing, and the canary counts
    only labels since it started, each row scored by both models."""
    from flows.canary import canary_decision
    from flows.monitoring import monitor
    from flows.schemas import CanaryParams, MonitorParams
    from tasks.core.logs import read_log
    from tasks.core.settings import Settings
    from tasks.core.store import LocalStore
    from tasks.registry.versions import Registry
    from tasks.serving.schema import input_contracts

    store = LocalStore(serving_store)
    registry = Registry(store, "flights-late-arrival")
    config = Settings().load_dataset()
    key = next(k for k in store.list("snapshots") if k.endswith(".parquet"))
    rows = store.read_parquet(key).tail(1200)  # the champion's own held-out rows: no drift, no decay
    labels = rows[config.target.name].to_list()
    records = [
        {**r, config.time.column: r[config.time.column].strftime("%Y-%m-%dT%H:%M:%SZ")}
        for r in rows.select(list(input_contracts(config))).rows(named=True)
    ]

    def replay(start: int, end: int) -> list[str]:
        ids = []
        for chunk in range(start, end, 100):  # the fixture's service limits the request size
            part = records[chunk : min(chunk + 100, end)]
            resp = httpx.post(f"{service}/predict_batch", json={"records": part}, headers=AUTH, timeout=60)
            assert resp.status_code == 200, resp.text
            ids += [a["request_id"] for a in resp.json()]
        items = [{"request_id": i, "outcome": y} for i, y in zip(ids, labels[start:end])]
        assert httpx.post(f"{service}/feedback", json={"items": items}, headers=FEEDBACK_AUTH).json()[
            "accepted"
        ] == len(items)
        return ids

    registry.set_alias("challenger", None, reason="test: before the canary", actor="test")
    time.sleep(1)  # the service follows the registry within its poll interval
    before = replay(0, 400)  # the champion alone
    registry.set_alias("challenger", 2, reason="test: a canary starts", actor="test")
    deadline = time.time() + 10
    while (
        httpx.post(f"{service}/model_status", headers=AUTH).json()["challenger"] != 2
        and time.time() < deadline
    ):
        time.sleep(0.2)
    during = replay(400, 1200)
    deadline = time.time() + 15
    while time.time() < deadline:
        logged = read_log(store, "predictions", MODEL, ["request_id"])
        fed = read_log(store, "feedback", MODEL, ["request_id"])
        if {*before, *during} <= set(logged["request_id"]) and {*before, *during} <= set(fed["request_id"]):
            break
        time.sleep(0.3)

    monkeypatch.setenv("DRIFTLOOP_STORE_URI", str(serving_store))
    report = monitor(MonitorParams())
    assert report.rows >= 1200 and not report.drift_detected and not report.degraded, (
        report.drift_reason,
        report.degraded,
    )
    served = {p.model_version: p for p in report.performance}
    assert served[1].labels >= 400 + 1 and served[1].roc_auc is not None
    # the verdict reaches the service's /metrics (re-read every second here), for the dashboard
    deadline, found = time.time() + 15, {}
    while time.time() < deadline and "judged" not in found:
        for line in httpx.get(f"{service}/metrics").text.splitlines():
            if line.startswith("driftloop_monitoring_") and f'model_name="{MODEL}"' in line:
                name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
                if name.endswith("judged_timestamp_seconds") and value == value:  # not NaN
                    found["judged"] = value
                if name.endswith("live_roc_auc") and 'bound="estimate"' in line:
                    found["auc"] = value
        time.sleep(0.5)
    assert abs(found.get("judged", 0) - time.time()) < 120, found
    assert found["auc"] == pytest.approx(served[1].roc_auc, abs=1e-9)

    # minutes into a canary nothing is promoted (canary_min_hours), and with no early stop allowed the
    # verdict is pinned: wait, and the challenger keeps its traffic
    monkeypatch.setenv("DRIFTLOOP_RETRAIN__CANARY_STOP_MARGIN", "1")
    decision = canary_decision(CanaryParams())
    evidence = decision.evidence
    assert evidence.paired is not None and evidence.paired.rows == 800  # the canary's rows, both models
    assert evidence.champion_labels + evidence.challenger_labels == 800  # not the 400 before it started
    assert evidence.challenger_labels > 200
    assert decision.outcome == "wait" and evidence.hours < 1, decision.reason
    assert registry.alias_doc().aliases["challenger"] == 2


def test_columns_are_as_strict_as_records_and_bodies_over_the_limit_are_413_however_framed(
    service, serving_store
):
    frame, records = _test_rows(serving_store, 3)
    columns = {k: [r[k] for r in records] for k in records[0]}
    int_column = next(k for k, v in columns.items() if isinstance(v[0], int) and not isinstance(v[0], bool))
    text_column = next(k for k, v in columns.items() if isinstance(v[0], str) and k != "time_hour")
    float_column = next(k for k, v in columns.items() if isinstance(v[0], float))
    cases = {
        "a fractional int": ({**columns, int_column: [v + 0.5 for v in columns[int_column]]}, {}),
        "an object where text is expected": ({**columns, text_column: [{"a": 1}] * 3}, {}),
        "a 5,000-character correlation id": (columns, {"correlation_ids": ["x" * 5000] * 3}),
    }
    for what, (cols, extra) in cases.items():
        resp = httpx.post(f"{service}/predict_columns", json={"columns": cols, **extra}, headers=AUTH)
        assert resp.status_code == 400, (what, resp.text)
        single = {k: v[0] for k, v in cols.items()}
        if not extra:  # /predict refuses the same value
            assert httpx.post(f"{service}/predict", json={"record": single}, headers=AUTH).status_code == 400
    body = json.dumps({"columns": columns}).replace(
        f'"{float_column}": {json.dumps(columns[float_column])}', f'"{float_column}": [Infinity, 1.0, 1.0]'
    )
    resp = httpx.post(
        f"{service}/predict_columns", content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert resp.status_code == 400 and float_column in resp.text and "finite" in resp.text

    big = json.dumps({"records": records * 2000}).encode()  # over the fixture's 1,500,000-byte limit

    def chunked():  # no Content-Length: the limit must hold for a streamed body too
        for i in range(0, len(big), 16384):
            yield big[i : i + 16384]

    resp = httpx.post(
        f"{service}/predict_batch", content=chunked(), headers={**AUTH, "content-type": "application/json"}
    )
    assert resp.status_code == 413 and "DRIFTLOOP_SERVING__MAX_REQUEST_BYTES" in resp.text
    assert httpx.post(f"{service}/predict", json={"record": records[0]}, headers=AUTH).status_code == 200
    # rejected input is logged once, at INFO, as one line: no traceback
    time.sleep(0.5)
    log = (SESSION_DIR / f"bentoml-{service.rsplit(':', 1)[1]}.log").read_text()
    assert "rejected (InvalidArgument: column" in log and "Traceback" not in log


def test_without_a_champion_the_service_is_live_but_not_ready(tmp_path):
    """A store where the served model has no version yet: the process is up (/livez), not ready
    (/readyz: a load balancer sends it nothing), and a request is a 503 that says why."""
    proc, url = _start_server(tmp_path / "empty-store", ready_path="/livez")
    try:
        assert httpx.get(f"{url}/readyz").status_code != 200
        body = json.loads((Path(__file__).parents[2] / "bentos/example_request.json").read_text())
        resp = httpx.post(f"{url}/predict", json=body, timeout=10)
        assert resp.status_code == 503 and "no champion model of 'flights-late-arrival'" in resp.text
        assert "is loaded yet" in resp.text and resp.headers["retry-after"] == "5"
        assert httpx.post(f"{url}/model_status").json()["champion"] is None
    finally:
        _stop(proc)


def test_an_unreachable_store_at_start_leaves_the_service_up_not_ready_and_saying_why(monkeypatch):
    """Nothing listens at the store's endpoint when the service starts: it starts anyway (no crash
    loop: the request schema comes from the settings' config, the request-id key is read on first use),
    is not ready, and says why; the watcher keeps polling, so it serves once the store answers."""
    monkeypatch.setenv("DRIFTLOOP_S3__ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proc, url = _start_server("s3://nowhere/driftloop", ready_path="/livez")
    try:
        assert httpx.get(f"{url}/readyz").status_code != 200
        status = httpx.post(f"{url}/model_status").json()
        assert status["champion"] is None and "registry unreachable" in " ".join(status["problems"])
        resp = httpx.post(f"{url}/predict", json={"record": {}}, timeout=10)
        assert resp.status_code == 503 and "registry unreachable" in resp.text
    finally:
        _stop(proc)


def test_every_endpoint_answers_what_its_openapi_spec_says(serving_store):
    """Schema-based fuzzing (schemathesis) of the running service, auth on, against its own
    ``/docs.json``: valid and invalid bodies, types, sizes, content types and methods for every
    operation; no 5xx, and every status code, content type and body as the document declares.
    The exceptions schemathesis cannot know are in tests/integration/schemathesis.toml, with why."""
    proc, url = _start_server(
        serving_store, auth_token=TOKEN, feedback_token=TOKEN, max_request_bytes="200000", access_log="true"
    )
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(Path(__file__).parent / "schemathesis.toml"),
                "run",
                f"{url}/docs.json",  # every check runs (schemathesis 4's default; the toml names exceptions)
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                "100",
                "--seed",
                "20261127",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=SESSION_DIR,  # its cache and reports go there, not into the checkout
        )
    finally:
        _stop(proc)
    assert run.returncode == 0, run.stdout[-6000:]
    assert "passed" in run.stdout and "9 selected / 10 total" in run.stdout  # /predict_arrow: see the toml
    log = (SESSION_DIR / f"bentoml-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "Traceback" not in log, "a fuzzed request logged a traceback"
    # the columns are described from the contract: a client generated from the document builds batches
    # the service scores (not every one: equal lengths are beyond JSON Schema)
    columns = re.findall(r"path=/predict_columns,.*?\(status=(\d+)", log)
    scored = columns.count("200")
    print(f"/predict_columns: {scored} of {len(columns)} generated requests answered 200")
    assert len(columns) >= 50 and scored >= 0.1 * len(columns), columns
