"""ONNX graphs: initializer counts and the liveness peak, checked against hand-computed values."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from memlens._errors import ConfigError, HeaderError, MissingExtraError
from memlens.report.json import to_json
from memlens.sources.checkpoint import summarize
from memlens.sources.onnx_graph import summarize_onnx

onnx = pytest.importorskip("onnx")
helper, numpy_helper, TP = onnx.helper, onnx.numpy_helper, onnx.TensorProto

# Hand-built chain (every value float32, N = batch):
#   n0 A = X @ W1          [N, 8]   32N bytes
#   n1 B = Relu(A)         [N, 8]   32N
#   n2 C = B @ W2          [N, 8]   32N
#   n3 D = A + C           [N, 8]   32N   (A, kept alive by this residual)
#   n4 E = Reshape(D, S)   [2N, 4]  a view of D: no bytes
#   n5 Y = E @ W3          [2N, 2]  16N   graph output
# Weights: W1 4x8, W2 8x8, W3 4x2 float (104 params, 416 B) and S, 2 int64 (16 B).
WEIGHT_BYTES = 416 + 16


def _chain(
    path: Path,
    *,
    outputs: tuple[str, ...] = ("Y",),
    first_dim: str | int = "N",
    order: tuple[int, ...] = tuple(range(6)),
) -> Path:
    inits = [
        numpy_helper.from_array(np.zeros((4, 8), np.float32), "W1"),
        numpy_helper.from_array(np.zeros((8, 8), np.float32), "W2"),
        numpy_helper.from_array(np.zeros((4, 2), np.float32), "W3"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "S"),
    ]
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["A"], name="n0"),
        helper.make_node("Relu", ["A"], ["B"], name="n1"),
        helper.make_node("MatMul", ["B", "W2"], ["C"], name="n2"),
        helper.make_node("Add", ["A", "C"], ["D"], name="n3"),
        helper.make_node("Reshape", ["D", "S"], ["E"], name="n4"),
        helper.make_node("MatMul", ["E", "W3"], ["Y"], name="n5"),
    ]
    graph = helper.make_graph(
        [nodes[i] for i in order],
        "chain",
        [helper.make_tensor_value_info("X", TP.FLOAT, [first_dim, 4])],
        [helper.make_tensor_value_info(o, TP.FLOAT, None) for o in outputs],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_chain_peak_by_hand(tmp_path: Path, batch: int) -> None:
    s = summarize(_chain(tmp_path / "chain.onnx"), batch=batch)
    n = batch
    assert s.n_params == 104 + 2 and s.weight_bytes == WEIGHT_BYTES
    assert {k: dataclasses.asdict(v) for k, v in s.by_dtype.items()} == {
        "FLOAT": {"tensors": 3, "params": 104, "bytes": 416},
        "INT64": {"tensors": 1, "params": 2, "bytes": 16},
    }
    assert s.input_bytes == 16 * n
    # live intermediates per node: 32N, 64N, 96N (A B C), 96N (A C D), 32N, 48N (D Y)
    assert s.peak_bytes == WEIGHT_BYTES + 16 * n + 96 * n
    assert (s.peak_node, s.peak_op) == ("n2", "MatMul")
    assert {t.name for t in s.peak_live} == {"A", "B", "C"}
    assert s.activation_bytes == 4 * 32 * n + 16 * n  # E is a view of D
    assert s.unknown == () and s.notes == ()
    assert json.loads(json.dumps(to_json(s)))["peak_bytes"] == s.peak_bytes


def test_graph_outputs_stay_alive(tmp_path: Path) -> None:
    s = summarize(_chain(tmp_path / "chain.onnx", outputs=("Y", "B")), batch=2)
    # B is now kept to the end: n3 holds A B C D = 128N
    assert s.peak_bytes == WEIGHT_BYTES + 16 * 2 + 128 * 2
    assert s.peak_node == "n3"


def test_fixed_batch_is_kept_and_said(tmp_path: Path) -> None:
    s = summarize(_chain(tmp_path / "chain.onnx", first_dim=2), batch=5)
    assert s.peak_bytes == WEIGHT_BYTES + 16 * 2 + 96 * 2
    assert "fixed first dimension of 2" in s.notes[0]


def test_unsorted_graph_refused(tmp_path: Path) -> None:
    path = _chain(tmp_path / "chain.onnx", order=(1, 0, 2, 3, 4, 5))
    with pytest.raises(HeaderError, match="node n1 uses 'A' before any node makes it"):
        summarize(path)


def test_identity_is_a_view(tmp_path: Path) -> None:
    # A = Relu(X); E = Identity(A); F = Relu(E); G = A + F. With E sharing A's memory:
    # n0 A, n1 A, n2 A F, n3 A F G -> peak 3 maps at n3 (a copy would peak at n2 with A E F).
    nodes = [
        helper.make_node("Relu", ["X"], ["A"], name="n0"),
        helper.make_node("Identity", ["A"], ["E"], name="n1"),
        helper.make_node("Relu", ["E"], ["F"], name="n2"),
        helper.make_node("Add", ["A", "F"], ["G"], name="n3"),
    ]
    graph = helper.make_graph(
        nodes,
        "view",
        [helper.make_tensor_value_info("X", TP.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("G", TP.FLOAT, None)],
    )
    path = tmp_path / "view.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    s = summarize(path)
    assert (s.peak_node, s.peak_bytes, s.activation_bytes) == ("n3", 128 + 3 * 128, 3 * 128)


def test_named_dims_and_unknown_sizes(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["A"], name="n0")],
        "seq",
        [helper.make_tensor_value_info("X", TP.FLOAT16, ["batch", "seq"])],
        [helper.make_tensor_value_info("A", TP.FLOAT16, ["batch", "seq"])],
    )
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    unsized = summarize(path, batch=2)
    assert set(unsized.unknown) == {"X", "A"}
    assert unsized.peak_bytes == 0 and "2 tensors could not be sized" in unsized.notes[-1]
    sized = summarize(path, batch=2, dims={"seq": 10})
    assert sized.unknown == () and sized.peak_bytes == 2 * (2 * 10 * 2)
    with pytest.raises(ConfigError, match=r"\['sequence'\] name no input dimension"):
        summarize(path, dims={"sequence": 10})


def test_subgraph_weights_and_outer_scope_liveness(tmp_path: Path) -> None:
    # n0 A = Relu(X); n1 B = Relu(X); n2 C = B + B; n3 R = If(cond) {A + Wt} else {A - We}.
    # A is read only inside the branches, so it lives until n3: n2 holds A B C, n3 A C R.
    def branch(op: str, w: str) -> object:
        return helper.make_graph(
            [helper.make_node(op, ["A", w], [f"{w}_out"])],
            f"{op}_branch",
            [],
            [helper.make_tensor_value_info(f"{w}_out", TP.FLOAT, [3, 4])],
            [numpy_helper.from_array(np.ones(4, np.float32), w)],
        )

    nodes = [
        helper.make_node("Relu", ["X"], ["A"], name="n0"),
        helper.make_node("Relu", ["X"], ["B"], name="n1"),
        helper.make_node("Add", ["B", "B"], ["C"], name="n2"),
        helper.make_node(
            "If",
            ["cond"],
            ["R"],
            name="n3",
            then_branch=branch("Add", "Wt"),
            else_branch=branch("Sub", "We"),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "if",
        [helper.make_tensor_value_info("X", TP.FLOAT, [3, 4])],
        [helper.make_tensor_value_info(o, TP.FLOAT, None) for o in ("R", "C")],
        [numpy_helper.from_array(np.array(True), "cond")],
    )
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    s = summarize(path)
    assert {k: dataclasses.asdict(v) for k, v in s.by_dtype.items()} == {
        "FLOAT": {"tensors": 2, "params": 8, "bytes": 32},
        "BOOL": {"tensors": 1, "params": 1, "bytes": 1},
    }
    assert s.peak_bytes == 33 + 48 + 3 * 48
    assert {t.name for t in s.peak_live} == {"A", "B", "C"}
    assert any("subgraphs" in n for n in s.notes)


def test_external_data_is_sized_not_read(tmp_path: Path) -> None:
    model = onnx.load(_chain(tmp_path / "chain.onnx"))
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()
    s = summarize(path, batch=1)
    assert s.weight_bytes == WEIGHT_BYTES and s.peak_bytes == WEIGHT_BYTES + 16 + 96
    assert any("external data" in n for n in s.notes)


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = y + torch.relu(self.conv2(y))
        return self.fc(y.mean((2, 3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_export(tmp_path: Path) -> None:
    model = ResidualCNN().eval()
    path = tmp_path / "cnn.onnx"
    # dynamo=True needs onnxscript; the TorchScript exporter is enough here
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 16, 16),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    n_params = sum(p.numel() for p in model.parameters())
    peaks = {}
    for batch in (1, 2, 4):
        s = summarize_onnx(path, batch=batch)
        assert s.n_params == n_params
        assert {k: dataclasses.asdict(v) for k, v in s.by_dtype.items()} == {
            "FLOAT": {"tensors": 6, "params": n_params, "bytes": 4 * n_params}
        }
        assert s.input_bytes == batch * 3 * 16 * 16 * 4
        # the peak is during the second ReLU: y, conv2(y) and its ReLU, 8x16x16 floats each
        assert s.peak_bytes == 4 * n_params + s.input_bytes + batch * 3 * 8 * 16 * 16 * 4
        assert s.peak_op == "Relu" and s.unknown == ()
        peaks[batch] = s.peak_bytes
    assert peaks[4] - peaks[2] == 2 * (peaks[2] - peaks[1])


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not an onnx file at all")
    with pytest.raises(HeaderError, match="junk.onnx"):
        summarize(path)
    path.write_bytes(b"")
    with pytest.raises(HeaderError, match="not an ONNX model"):
        summarize(path)


def test_missing_onnx_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _chain(tmp_path / "chain.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'memlens\[onnx\]'"):
        summarize(path)
