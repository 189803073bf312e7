"""ONNX models: converted for white-box attacks when onnx2torch converts them, else served by
onnxruntime as query-only models on which evaluate runs the black-box attacks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import train_digits_mlp
from torch import nn

from adversa.cli.main import main
from adversa.errors import AccessError
from adversa.load import load_model
from adversa.model import Access
from adversa.model.onnx import _Session
from adversa.nets import build_arch


def _export(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            module.eval(),
            (torch.rand(2, 1, 8, 8),),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path


def _digits_net() -> nn.Module:
    """The digits MLP on (1, 8, 8) images."""
    mlp = train_digits_mlp(0)
    return nn.Sequential(nn.Flatten(), *mlp).eval()


def _shrink_onnx(path: Path) -> tuple[Path, nn.Module]:
    """The digits MLP written as an ONNX graph by hand with a Shrink node (lambd 1e-3), an
    operator adversa's torch interpreter lacks but onnxruntime runs; with its torch twin."""
    from onnx import TensorProto, helper, numpy_helper, save

    mlp = train_digits_mlp(0)
    weights = [
        numpy_helper.from_array(t.detach().numpy(), name)
        for t, name in zip(
            (mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias),
            ("w1", "b1", "w2", "b2"),
            strict=True,
        )
    ]
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Shrink", ["r"], ["s"], lambd=1e-3),
        helper.make_node("Gemm", ["s", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "shrink-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    twin = nn.Sequential(nn.Flatten(), mlp[0], mlp[1], nn.Hardshrink(1e-3), mlp[2]).eval()
    return path, twin


def _evaluate(model: Path, out: Path, *extra: str) -> list[str]:
    args = ["evaluate", "--model", str(model), "--data", "digits", "--norm", "linf"]
    return [*args, "--eps", "0.1", "--n", "40", "--out", str(out), *extra]


def test_converted_onnx_model_is_white_box(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    net = _digits_net()
    path = _export(net, tmp_path / "digits.bin")  # recognised by content, not by name
    model = load_model(str(path))
    assert model.access == Access.GRADIENT and "[torch]" in model.name
    x = torch.rand(16, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)
    assert main(_evaluate(path, tmp_path / "ev", "--attacks", "pgd")) == 0, capsys.readouterr()
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["clean_accuracy"] >= 0.85
    assert report["robust_accuracy"] <= report["clean_accuracy"] - 0.3  # eps 0.1 on digits


def test_unconvertible_onnx_model_is_query_only(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, net = _shrink_onnx(tmp_path / "shrink.onnx")
    model = load_model(str(path))
    assert model.access == Access.SCORES and "onnxruntime, query-only" in model.name
    x = torch.rand(8, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(AccessError, match="no gradients"):
        model(x.requires_grad_(True))
    capsys.readouterr()
    assert main(_evaluate(path, tmp_path / "bb", "--attacks", "square")) == 0
    report = json.loads((tmp_path / "bb" / "report.json").read_text())
    assert report["clean_accuracy"] >= 0.85
    assert report["robust_accuracy"] < report["clean_accuracy"]
    assert report["attacks"][0]["backward_calls"] == 0 < report["attacks"][0]["queries"]
    code = main(_evaluate(path, tmp_path / "pgd", "--attacks", "pgd"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert "gradient" in err[-1] and "pgd" in err[-1]


def test_default_attacks_on_a_query_only_onnx_model_are_black_box(tmp_path: Path) -> None:
    path, _ = _shrink_onnx(tmp_path / "shrink.onnx")
    assert main(_evaluate(path, tmp_path / "ev")) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    names = [a["name"] for a in report["attacks"]]
    assert names and all(n in ("square", "hsj", "simba") for n in names)


def test_a_corrupt_onnx_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.onnx"
    good = _export(_digits_net(), tmp_path / "good.onnx").read_bytes()
    path.write_bytes(good[: len(good) // 3])
    code = main(_evaluate(path, tmp_path / "ev"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "broken.onnx" in err[0]


@pytest.mark.parametrize("arch", ["resnet18-cifar", "vit-tiny"])
def test_colour_networks_convert_with_the_same_input_gradients(arch: str, tmp_path: Path) -> None:

    torch.manual_seed(0)
    net = build_arch(arch, (3, 32, 32), 10).eval()
    path = tmp_path / f"{arch}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(2, 3, 32, 32),),
            str(path),
            dynamic_axes={"x": {0: "b"}},
            input_names=["x"],
            dynamo=False,
            opset_version=18,
        )
    model = load_model(str(path))
    assert model.access == Access.GRADIENT and "[torch]" in model.name
    x = torch.rand(3, 3, 32, 32)
    ours = x.clone().requires_grad_(True)
    theirs = x.clone().requires_grad_(True)
    model.module(ours)[:, 0].sum().backward()
    net(theirs)[:, 0].sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_an_unsupported_operator_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = _shrink_onnx(tmp_path / "shrink.onnx")
    with caplog.at_level("WARNING"):
        load_model(str(path))
    assert "operator Shrink" in caplog.text and "query-only" in caplog.text


def test_a_fixed_batch_graph_runs_in_chunks(tmp_path: Path) -> None:
    net = _digits_net()
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 1, 8, 8),), str(path), dynamo=False)
    model = load_model(str(path))
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)
    session = _Session(path)  # onnxruntime alone: 5 rows through a graph fixed at 1
    assert session.fixed_batch == 1
    torch.testing.assert_close(session(x), net(x), rtol=1e-5, atol=1e-5)
