"""Every endpoint is declared once, and the declaration is what the guard and the API document read."""

from __future__ import annotations

import pytest

from bentos.endpoints import BY_PATH, check_declared, endpoint_of, paths_with


def test_an_api_without_a_declaration_cannot_start():
    check_declared(["predict", "feedback", "model_status"], ["/predict_arrow"])  # all declared
    with pytest.raises(RuntimeError, match=r"\['/explain'\] have no declaration"):
        check_declared(["predict", "explain"], ["/predict_arrow"])
    with pytest.raises(RuntimeError, match=r"\['/predict'\] have no declaration"):
        check_declared([], ["/predict"])  # declared, but not as a mounted app


def test_a_mounted_apps_sub_paths_fall_under_its_declaration_and_unknown_paths_under_none():
    assert endpoint_of("/predict_arrow/") is BY_PATH["/predict_arrow"]
    assert endpoint_of("/predict_arrow/x") is BY_PATH["/predict_arrow"]
    assert endpoint_of("/predict/") is None and endpoint_of("/admin") is None
    assert endpoint_of("/healthz").token == "none"


def test_the_document_and_the_guard_read_the_same_lists():
    assert paths_with(needs_champion=True) == (
        "/predict",
        "/predict_batch",
        "/predict_columns",
        "/predict_arrow",
    )
    assert paths_with(token="feedback") == ("/feedback",)
    assert BY_PATH["/model_status"].token == "scoring" and not BY_PATH["/model_status"].needs_champion


def test_a_key_named_twice_in_any_object_of_a_body_is_found():
    from bentos.guard import repeated_key

    assert repeated_key(b'{"record": {"carrier": "UA", "distance": 5, "carrier": "ZZ"}}') == "carrier"
    assert repeated_key(b'{"records": [{"a": 1}, {"a": 2, "b": 1, "b": 2}]}') == "b"
    assert repeated_key(b'{"records": [{"a": 1}, {"a": 2}]}') is None  # the same key in two objects
    assert repeated_key(b'{"record": {"a": 1}, "record": {"a": 1}}') == "record"
    assert repeated_key(b'{"record": ') is None  # not JSON: the endpoint says what is wrong
