"""The judge/child encoding: round trips, and refusal of anything malformed."""

from __future__ import annotations

import math
import os

import pytest
import torch

from autograder.protocol import ProtocolError, Spec, decode, encode, read_frame, write_frame
from autograder.protocol import specs as spec_registry
from autograder.protocol.codec import DTYPES


def roundtrip(value, **kw):
    header, payload = encode(value)
    return decode(header, payload, **kw)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_every_listed_dtype_round_trips_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 100
    t = x.to(dtype) if dtype != torch.bool else x > 0
    out = roundtrip(t)
    assert out.dtype == dtype and out.shape == t.shape
    assert torch.equal(out.view(torch.uint8), t.view(torch.uint8))


def test_containers_numbers_and_specials_round_trip():
    value = {"a": [1, 2.5, None, True, "s"], 3: (float("nan"), float("inf"), -float("inf")),
             "big": 2**70, "dtype": torch.bfloat16, "empty": torch.empty(0, 4),
             "noncontig": torch.arange(12.0).reshape(3, 4).t()}
    out = roundtrip(value)
    assert out["a"] == [1, 2.5, None, True, "s"]
    assert math.isnan(out[3][0]) and out[3][1] == math.inf and out[3][2] == -math.inf
    assert out["big"] == 2**70 and out["dtype"] is torch.bfloat16
    assert out["empty"].shape == (0, 4)
    assert torch.equal(out["noncontig"], value["noncontig"])


def test_unsendable_values_are_refused_not_pickled():
    for bad in (object(), lambda x: x, {1.5: 2}, torch.nn.Linear(2, 2)):
        with pytest.raises(ProtocolError):
            encode(bad)


def test_specs_are_refused_unless_the_receiver_builds_them():
    header, payload = encode(Spec("mlp", {"sizes": [2, 3], "state": {}}))
    with pytest.raises(ProtocolError, match="not accepted"):
        decode(header, payload)
    model = decode(header, payload, specs=spec_registry.build)
    assert isinstance(model, torch.nn.Sequential)
    with pytest.raises(ProtocolError, match="unknown problem spec"):
        decode({"spec": "os.system", "params": {"dict": []}}, b"", specs=spec_registry.build)


@pytest.mark.parametrize("header", [
    {"tensor": "float32", "shape": [4], "offset": 0, "nbytes": 16, "on": "cpu"},     # past the payload
    {"tensor": "float32", "shape": [3], "offset": 0, "nbytes": 8, "on": "cpu"},      # bytes != shape
    {"tensor": "object", "shape": [1], "offset": 0, "nbytes": 8, "on": "cpu"},       # unknown dtype
    {"tensor": "float32", "shape": [-1], "offset": 0, "nbytes": 4, "on": "cpu"},     # negative dim
    {"tensor": "float32", "shape": [1], "offset": 0, "nbytes": 4},                   # missing field
    {"pickle": "gASVAAAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAJpZJSFlFKULg=="},         # unknown kind
    {"dict": [[1.5, 2]]},                                                            # bad key
    {"dtype": "int128"},
])
def test_malformed_headers_are_rejected(header):
    with pytest.raises(ProtocolError):
        decode(header, b"\x00" * 8)


def test_depth_is_bounded():
    h = 1
    for _ in range(100):
        h = [h]
    with pytest.raises(ProtocolError, match="deeply"):
        decode(h, b"")


def test_frames_over_a_pipe_and_garbage_is_a_protocol_error():
    import threading

    r, w = os.pipe()
    t = torch.randn(1000, 100)  # 400 kB: more than a pipe buffers, so write from a thread
    writer = threading.Thread(target=write_frame, args=(w, {"op": "call", "x": t}))
    writer.start()
    header, payload = read_frame(r)
    writer.join()
    assert torch.equal(decode(header, payload)["x"], t)
    os.write(w, b"NOT A FRAME AT ALL, JUST PRINTED TEXT")
    with pytest.raises(ProtocolError, match="magic"):
        read_frame(r)
    os.close(r)
    os.close(w)


def test_protocol_never_imports_pickle():
    import autograder.protocol as proto

    root = os.path.dirname(proto.__file__)
    for name in os.listdir(root):
        if name.endswith(".py"):
            text = open(os.path.join(root, name)).read()
            assert "pickle" not in text.replace("never unpickles", "").replace("unpickled", "").replace(
                "Nothing here unpickles", ""), name
