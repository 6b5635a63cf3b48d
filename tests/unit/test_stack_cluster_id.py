"""The KRaft cluster id of a new local stack: 22 URL-safe base64 characters,
never starting with ``-`` (the storage tool reads such an id as an option)."""

from __future__ import annotations

import base64
import uuid

import pytest

from pipeline.stack import jvm, kafka_broker

pytestmark = pytest.mark.unit


def test_cluster_id_skips_ids_that_start_with_a_dash(monkeypatch) -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # 0b111110.. encodes as "-"
    plain = uuid.UUID(bytes=b"\x04" + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).startswith(b"-")
    draws = iter([dashed, dashed, plain])
    monkeypatch.setattr(kafka_broker.uuid, "uuid4", lambda: next(draws))
    cid = jvm.cluster_id()
    assert cid == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cid) == 22


def test_cluster_ids_are_random_and_well_formed() -> None:
    ids = {jvm.cluster_id() for _ in range(200)}
    assert len(ids) == 200
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for cid in ids:
        assert len(cid) == 22
        assert set(cid) <= alphabet
        assert not cid.startswith("-")
