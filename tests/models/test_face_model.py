"""load_face_model on files as arcface_torch / insightface users have them (tests/thirdparty).

The third-party network is a separate class with arcface_torch's layout, so passing tests show
the loader reads foreign files, not only facexai's own ``IResNet``.
"""

from __future__ import annotations

import operator
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import torchvision
from onnx import TensorProto, helper
from torch import fx, nn

from facexai.export.metadata import ExportMetadata
from facexai.models import CanonicalInput, IResNet, VerificationModule, load_face_model
from facexai.models.loading import onnx_graph
from facexai.models.loading.canonical import ONNX_SPECIFIC
from tests.thirdparty.arcface_torch import (
    DEPTHS,
    ArcIResNet,
    export_like_torch2onnx,
    face_batch,
    make_arcface_model,
    save_state_dict,
)

SIDE = 112
EMBEDDING = 128


@pytest.fixture(scope="module")
def arcface() -> nn.Module:
    """The small arcface_torch-layout network every file below is written from."""
    return make_arcface_model((1, 1, 1, 1), EMBEDDING, (16, 32, 64, 128), side=SIDE)


@pytest.fixture(scope="module")
def onnx_path(arcface: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_like_torch2onnx(arcface, tmp_path_factory.mktemp("onnx") / "r.onnx", side=SIDE)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return face_batch(3, SIDE, seed=11)


def _run(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


def _onnxruntime(path: Path, images: torch.Tensor) -> torch.Tensor:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])


def _export(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            example,
            str(path),
            input_names=["data"],
            opset_version=11,
            dynamo=False,
            dynamic_axes={"data": {0: "n"}},
        )
    return path


# --- PyTorch state dicts --------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "ddp"])
def test_state_dict_loads_into_iresnet_and_matches(arcface, faces, tmp_path, variant):
    path = save_state_dict(arcface, tmp_path / "backbone.pth", variant)
    model = load_face_model(path)
    assert isinstance(model, IResNet)
    assert not model.training
    assert "layer4" in dict(model.named_modules())
    info = model.face_model_info
    assert (info.source, info.input_size, info.embedding_size, info.parity_cosine) == (
        "state_dict",
        SIDE,
        EMBEDDING,
        None,
    )
    assert info.layout.canonical
    assert info.path == str(path)
    # same float32 weights and the same operations in the same order: equal up to summation order
    torch.testing.assert_close(_run(model, faces), _run(arcface, faces), rtol=0, atol=1e-5)


def test_fp16_state_dict_is_cast_to_float32(arcface, faces, tmp_path):
    model = load_face_model(save_state_dict(arcface, tmp_path / "half.pth", "fp16"))
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())
    # The only difference to the original is fp16 rounding of the stored tensors (relative error
    # <= 2**-11 each), so the loader must equal the third-party network with those rounded
    # tensors exactly, and stay close in direction to the unrounded one.
    rounded = ArcIResNet((1, 1, 1, 1), EMBEDDING, (16, 32, 64, 128), SIDE).eval()
    rounded.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in arcface.state_dict().items()}
    )
    ours = _run(model, faces)
    torch.testing.assert_close(ours, _run(rounded, faces), rtol=0, atol=1e-5)
    assert F.cosine_similarity(ours, _run(arcface, faces)).min() > 0.999


def test_depth_width_and_side_are_read_from_the_tensors(tmp_path):
    torch.manual_seed(0)
    r18 = ArcIResNet(DEPTHS[18], 512, (64, 128, 256, 512), 112).eval()
    model = load_face_model(save_state_dict(r18, tmp_path / "r18.pth"))
    assert [len(getattr(model, f"layer{k}")) for k in range(1, 5)] == [2, 2, 2, 2]
    assert model.face_model_info.embedding_size == 512
    assert model.img_size == 112
    x = face_batch(1, 112, seed=3)
    torch.testing.assert_close(_run(model, x), _run(r18, x), rtol=1e-4, atol=1e-4)
    # a depth and side no published model has
    odd = ArcIResNet((1, 2, 3, 1), 64, (8, 16, 16, 32), side=48).eval()
    loaded = load_face_model(save_state_dict(odd, tmp_path / "odd.pth"))
    assert [len(getattr(loaded, f"layer{k}")) for k in range(1, 5)] == [1, 2, 3, 1]
    assert (loaded.face_model_info.input_size, loaded.face_model_info.embedding_size) == (48, 64)


def test_other_architecture_state_dict_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match=r"not an arcface_torch IResNet state dict: it lacks prelu.weight") as err:
        load_face_model(path)
    assert "\n" not in str(err.value)


def test_state_dict_missing_a_block_tensor_is_refused(arcface, tmp_path):
    state = {k: v for k, v in arcface.state_dict().items() if k != "layer2.0.downsample.1.running_mean"}
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"missing layer2.0.downsample.1.running_mean; unexpected none"):
        load_face_model(tmp_path / "cut.pth")


def test_state_dict_layout_options_wrap_the_network(arcface, faces, tmp_path):
    # a network trained on BGR pixels in [0, 255]: canonical faces must reach it converted
    model = load_face_model(save_state_dict(arcface, tmp_path / "b.pth"), mean=0, std=1, channel_order="BGR")
    assert isinstance(model, CanonicalInput)
    assert isinstance(model.network, IResNet)
    expected = _run(arcface, (faces.flip(1) * 127.5 + 127.5))
    torch.testing.assert_close(_run(model, faces), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_state_dict_input_size_must_agree(arcface, tmp_path):
    with pytest.raises(ValueError, match=r"input_size=96 contradicts .* 112 px"):
        load_face_model(save_state_dict(arcface, tmp_path / "b.pth"), input_size=96)


# --- ONNX --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model(onnx_path: Path) -> nn.Module:
    return load_face_model(onnx_path)


def test_onnx_matches_onnxruntime_and_the_pytorch_original(arcface, onnx_path, onnx_model, faces):
    declared = onnx.load(str(onnx_path)).graph.output[0].type.tensor_type.shape.dim
    assert declared[0].dim_value == 1  # torch2onnx fixes the output batch at 1; we feed 3
    model = onnx_model
    assert isinstance(model, fx.GraphModule)
    assert not model.training
    info = model.face_model_info
    assert (info.source, info.input_size, info.embedding_size) == ("onnx", SIDE, EMBEDDING)
    assert info.parity_cosine >= 0.9999
    ours = _run(model, faces)
    reference = _onnxruntime(onnx_path, faces)
    assert F.cosine_similarity(ours, reference).min() >= 0.9999
    # export folds BN into the convolutions: float32 reassociation only, far below 1e-4 of the scale
    original = _run(arcface, faces)
    assert (ours - original).abs().max() <= 1e-4 * original.abs().max()


def test_onnx_graph_is_canonical_torch(onnx_model):
    model = onnx_model
    kinds = [type(m) for m in model.modules()]
    assert not [k.__name__ for k in kinds if issubclass(k, ONNX_SPECIFIC)]
    # 4 blocks: each keeps its bn1 (exported before a conv, not folded) plus the head's bn2;
    # the per-block PReLUs and the stem's; one residual add per block; features is BatchNorm1d
    assert kinds.count(nn.BatchNorm2d) == 5
    assert kinds.count(nn.PReLU) == 5
    assert kinds.count(nn.BatchNorm1d) == 1
    adds = [n for n in model.graph.nodes if n.op == "call_function" and n.target is operator.add]
    assert len(adds) == 4
    # the stripped Identity copies leave no duplicated constants behind
    assert not list(model.initializers.buffers())


def test_onnx_model_trains_like_a_native_network(onnx_path, faces):
    model = load_face_model(onnx_path).train()
    out = model(faces)
    out.pow(2).sum().backward()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert all(m.weight.grad is not None for m in convs + prelus)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 1 for m in norms)  # batch statistics in train mode


class _FromBgrPixels(nn.Module):
    """Takes BGR pixels 0..255 and feeds the canonical network: a BGR, mean 0 / std 1 file."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        return self.network((bgr.flip(1) - 127.5) / 127.5)


@pytest.fixture(scope="module")
def bgr_path(arcface, tmp_path_factory) -> Path:
    example = face_batch(1, SIDE).flip(1) * 127.5 + 127.5
    return _export(_FromBgrPixels(arcface), tmp_path_factory.mktemp("bgr") / "bgr.onnx", example)


def test_bgr_raw_pixel_onnx_with_options_equals_canonical_model(arcface, bgr_path, faces):
    model = load_face_model(bgr_path, mean=0, std=1, channel_order="BGR")
    assert isinstance(model, CanonicalInput)
    assert isinstance(model.network, fx.GraphModule)
    layout = model.face_model_info.layout
    assert (layout.mean, layout.std, layout.channel_order) == ((0.0,) * 3, (1.0,) * 3, "BGR")
    assert model.face_model_info.parity_cosine >= 0.9999
    original = _run(arcface, faces)
    assert (_run(model, faces) - original).abs().max() <= 1e-4 * original.abs().max()
    # without the options the canonical faces are read as dark BGR pixels: a different network
    plain = load_face_model(bgr_path, check_parity=False)
    assert F.cosine_similarity(_run(plain, faces), original).max() < 0.99


def test_facexai_metadata_gives_the_layout(arcface, bgr_path, faces, tmp_path):
    proto = onnx.load(str(bgr_path))
    props = ExportMetadata(
        task="verification", input_size=SIDE, input_format="raw_pixels", embedding_size=EMBEDDING
    ).to_props()
    props["facexai.input_layout"] = "NCHW BGR float32"
    helper.set_model_props(proto, props)
    onnx.save(proto, str(tmp_path / "meta.onnx"))
    model = load_face_model(tmp_path / "meta.onnx")
    assert model.face_model_info.layout.channel_order == "BGR"
    assert model.face_model_info.layout.mean == (0.0,) * 3
    original = _run(arcface, faces)
    assert (_run(model, faces) - original).abs().max() <= 1e-4 * original.abs().max()


class _FromRawPixels(nn.Module):
    """Normalises inside the graph, as mxnet-converted insightface models do."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network((pixels - 127.5) * (1 / 127.5))


def test_insightface_convention_sub_mul_head_means_raw_pixels(arcface, faces, tmp_path):
    path = _export(_FromRawPixels(arcface), tmp_path / "mx.onnx", face_batch(1, SIDE) * 127.5 + 127.5)
    proto = onnx.load(str(path))
    # insightface looks at the first 8 node names; mxnet graphs start with the normalisation
    nodes = list(proto.graph.node)
    head = [i for i, node in enumerate(nodes[:10]) if node.op_type in ("Constant", "Sub", "Mul")]
    order = head + [i for i in range(len(nodes)) if i not in head]
    copies = [onnx.NodeProto.FromString(nodes[i].SerializeToString()) for i in order]
    del proto.graph.node[:]
    proto.graph.node.extend(copies)
    for node in proto.graph.node[:8]:
        node.name = {"Sub": "_minusscalar0", "Mul": "_mulscalar0"}.get(node.op_type, node.name)
    onnx.save(proto, str(path))
    model = load_face_model(path)
    assert model.face_model_info.layout.mean == (0.0,) * 3
    assert model.face_model_info.layout.std == (1.0,) * 3
    # the torch-free audit reads the same convention off the same file
    from facexai.export.audit_model import OnnxFaceModel

    spec = OnnxFaceModel(path).spec
    assert spec.mean == (0.0,) * 3
    assert spec.std == (1.0,) * 3
    original = _run(arcface, faces)
    assert (_run(model, faces) - original).abs().max() <= 1e-4 * original.abs().max()


def test_symbolic_input_side_needs_input_size(arcface, tmp_path):
    path = tmp_path / "any_side.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            arcface,
            face_batch(1, SIDE),
            str(path),
            input_names=["data"],
            opset_version=11,
            dynamo=False,
            dynamic_axes={"data": {0: "n", 2: "h", 3: "w"}},
        )
    with pytest.raises(ValueError, match="declares no fixed input side; pass input_size"):
        load_face_model(path)
    assert load_face_model(path, input_size=SIDE).face_model_info.input_size == SIDE


def test_facexai_classification_export_is_refused(onnx_path, tmp_path):
    proto = onnx.load(str(onnx_path))
    helper.set_model_props(
        proto, ExportMetadata(task="classification", input_size=SIDE, num_classes=EMBEDDING).to_props()
    )
    onnx.save(proto, str(tmp_path / "cls.onnx"))
    with pytest.raises(ValueError, match="facexai classification export"):
        load_face_model(tmp_path / "cls.onnx")


# --- bad input ---------------------------------------------------------------------------------


def _lp_normalised_graph(path: Path) -> Path:
    """(N, 3, 16, 16) -> GlobalAveragePool -> Flatten -> LpNormalization: valid, but no converter."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("LpNormalization", ["flat"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "lp",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return path


def _bad_file(kind: str, tmp_path: Path, arcface: nn.Module, onnx_path: Path) -> Path:
    if kind == "vector_input":
        return _export(nn.Linear(8, 4), tmp_path / "vec.onnx", torch.randn(1, 8))
    if kind == "map_output":
        return _export(nn.Conv2d(3, 4, 3), tmp_path / "map.onnx", torch.randn(1, 3, 16, 16))
    if kind == "unconvertible":
        return _lp_normalised_graph(tmp_path / "lp.onnx")
    data = onnx_path.read_bytes() if kind == "truncated_onnx" else b""
    if kind == "truncated_pth":
        data = save_state_dict(arcface, tmp_path / "full.pth").read_bytes()
    if kind == "truncated_ckpt":
        module = VerificationModule(num_identities=4, embedding_size=16, backbone_kwargs={"img_size": 32})
        torch.save(
            {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "full.ckpt"
        )
        data = (tmp_path / "full.ckpt").read_bytes()
    target = tmp_path / {"truncated_onnx": "cut.onnx", "truncated_pth": "cut.pth", "truncated_ckpt": "cut.ckpt"}.get(
        kind, "empty.onnx"
    )
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("vector_input", r"input 'data' has shape \(n, 8\); expected an image batch \(N, 3, S, S\)"),
        ("map_output", r"has shape \(n, 4, 14, 14\); expected embeddings \(N, D\)"),
        ("unconvertible", r"onnx2torch cannot convert .*no converter for LpNormalization \(opset 11\)"),
        ("truncated_onnx", "is not a readable ONNX model"),
        ("truncated_pth", "is not a readable PyTorch weights file"),
        ("truncated_ckpt", "is not a readable PyTorch weights file"),
        ("empty", "is empty"),
    ],
)
def test_bad_files_give_one_line_value_errors_and_write_nothing(kind, message, tmp_path, arcface, onnx_path):
    path = _bad_file(kind, tmp_path, arcface, onnx_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=message) as err:
        load_face_model(path)
    assert "\n" not in str(err.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_parity_failure_is_refused_with_the_number(onnx_path, monkeypatch):
    measured = onnx_graph.onnxruntime_outputs

    def rotated(*args):  # a runtime whose embeddings point elsewhere: cosine with ours ~ 0
        out = measured(*args)
        return torch.roll(out, shifts=1, dims=1) * torch.linspace(-1, 1, out.shape[1])

    monkeypatch.setattr(onnx_graph, "onnxruntime_outputs", rotated)
    with pytest.raises(ValueError, match=r"disagrees with onnxruntime \(per-sample cosine -?0\.\d{6} < 0.9999\)"):
        load_face_model(onnx_path)
    assert load_face_model(onnx_path, check_parity=False).face_model_info.parity_cosine is None


def test_parity_cosine_is_the_worst_sample():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # second sample at 45 degrees: cos = 0.707107
    with pytest.raises(ValueError, match=r"cosine 0\.707107"):
        onnx_graph.parity_cosine(a, b, Path("m.onnx"))
    assert onnx_graph.parity_cosine(a, a, Path("m.onnx")) == pytest.approx(1.0)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        load_face_model(tmp_path / "nope.onnx")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channel_order": "RGBA"}, "channel_order must be one of RGB, BGR, got 'RGBA'"),
        ({"std": 0}, "std must be positive"),
        ({"mean": (1.0, 2.0)}, "mean must be a number or 3 numbers"),
        ({"input_size": 96}, r"input_size=96 contradicts .* graph input is 112x112"),
        ({"input_size": 0}, "input_size must be a positive int"),
    ],
)
def test_bad_options(onnx_path, options, message):
    with pytest.raises(ValueError, match=message):
        load_face_model(onnx_path, **options)


# --- Lightning checkpoints -------------------------------------------------------------------


def test_lightning_checkpoint_gives_its_backbone(tmp_path):
    torch.manual_seed(0)
    module = VerificationModule(num_identities=4, embedding_size=16, backbone_kwargs={"img_size": 32}).eval()
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    model = load_face_model(path)
    info = model.face_model_info
    assert (info.source, info.input_size, info.embedding_size) == ("lightning", 32, 16)
    x = face_batch(2, 32)
    torch.testing.assert_close(_run(model, x), _run(module, x))


def test_classifier_checkpoint_is_refused(tmp_path):
    from facexai.models import ClassifierModule

    module = ClassifierModule(backbone="resnet10t", num_classes=3)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="ClassifierModule checkpoint; load_face_model needs a VerificationModule"):
        load_face_model(tmp_path / "c.ckpt")
