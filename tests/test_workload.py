"""Workload validation: bad values are refused with the field and the allowed values."""

from __future__ import annotations

import pytest

from memlens import Workload, WorkloadError
from memlens.workload import parse_shape


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"batch": 0}, "batch", "positive integer"),
        ({"batch": -3}, "batch", "positive integer"),
        ({"batch": True}, "batch", "positive integer"),
        ({"seq_len": 0}, "seq_len", "positive integer"),
        ({"mode": "serve"}, "mode", "inference, train"),
        ({"optimizer": "adamx"}, "optimizer", "sgd, sgd-momentum, adam, adamw"),
        ({"precision": "fp8"}, "precision", "fp32"),
        ({"device": "tpu"}, "device", "cpu, cuda"),
        ({"input_shape": (3, 0, 224)}, "input_shape", "positive integers"),
    ],
)
def test_bad_values_name_the_field(kwargs, field, hint):
    with pytest.raises(WorkloadError) as info:
        Workload(**kwargs)
    assert info.value.field == field
    assert field in str(info.value) and hint in str(info.value)


def test_values_are_normalised():
    w = Workload(mode="TRAIN", optimizer="AdamW", device="CPU", input_shape=[3, 32, 32])
    assert (w.mode, w.optimizer, w.device, w.input_shape) == ("train", "adamw", "cpu", (3, 32, 32))


def test_parse_shape():
    assert parse_shape("3x224x224") == (3, 224, 224)
    assert parse_shape("3,32,32") == (3, 32, 32)
    with pytest.raises(WorkloadError):
        parse_shape("3xabc")
    with pytest.raises(WorkloadError):
        parse_shape("3x-1")
