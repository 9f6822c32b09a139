"""Fuzzing the ONNX files facexai reads: the metadata contract and the file bytes.

Two readers take ONNX files from anywhere: :func:`facexai.export.metadata.read_metadata` (raises
``MetadataError``) and the audit's model opening, :class:`facexai.export.audit_model.OnnxFaceModel`
(raises ``AuditModelError``). Each case mutates a tiny valid facexai export (built once, by hand,
in milliseconds): either the values of its ``facexai.*`` metadata (wrong JSON types, huge
numbers, NaN/inf, missing keys, garbage or deeply nested JSON, truncated strings) or the
serialised file itself (truncation, bit flips, overwritten lengths, spliced chunks, random
bytes). The property (``fuzz_cases.check_reader``): a correct read or the reader's own error with
a message; no other exception, no hang, bounded memory.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
from fuzz_cases import DEFAULT_CASES, SLOW_CASES, check_reader, mutations, write
from onnx import TensorProto, helper

from facexai.export.audit_model import AuditModelError, OnnxFaceModel
from facexai.export.metadata import PREFIX, ExportMetadata, MetadataError, read_metadata

SIDE = 16
#: a 16 px probe batch is tiny; a metadata value that made the audit allocate by its word (say a
#: 100000 px input) would pass this by orders of magnitude
MEMORY_BOUND = 64 * 2**20
HOSTILE_VALUES = [
    "",
    "0",
    "-1",
    "1e309",
    "-1e309",
    "nan",
    "inf",
    "-inf",
    "NaN",
    "1e300",
    "99999999999999999999999",
    str(2**63),
    "3.5",
    "true",
    "null",
    '"text"',
    "{}",
    '{"a": 1}',
    "[]",
    "[1, 2]",
    '[{"a": 1}]',
    '["images", 5]',
    "[[]]",
    "[",
    '{"a":',
    "[" * 50_000,
    '["a"' * 1000,
    "\x00",
    "\ufffd",
    "x" * 100_000,
    "normalised",
    "verification",
    "raw_pixels",
    "2",
    "1024",
    "1025",
    "15",
    "255",
    "256",
]


def tiny_export(explained: bool) -> onnx.ModelProto:
    """A valid facexai verification export: embedding (N, 3) = mean colour; explained adds map and similarity."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])
    first = "output" if explained else "embedding"
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], [first]),
    ]
    inputs, outputs = [images], [helper.make_tensor_value_info(first, TensorProto.FLOAT, ["N", 3])]
    meta = ExportMetadata(task="verification", input_size=SIDE, embedding_size=3, notes=("tiny",))
    if explained:
        inputs.append(helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", 3]))
        nodes += [
            helper.make_node("ReduceMean", ["images"], ["map"], axes=[1], keepdims=0),
            helper.make_node("Mul", ["output", "target"], ["product"]),
            helper.make_node("ReduceSum", ["product", "axis1"], ["similarity"], keepdims=0),
        ]
        outputs += [
            helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", SIDE, SIDE]),
            helper.make_tensor_value_info("similarity", TensorProto.FLOAT, ["N"]),
        ]
        meta = ExportMetadata(
            task="verification",
            input_size=SIDE,
            embedding_size=3,
            explainer="gradcam",
            explainer_options={"target_layer": "layer4"},
            input_names=("images", "target"),
            output_names=("output", "map", "similarity"),
            class_names=None,
        )
    axis = [helper.make_tensor("axis1", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "tiny_face", inputs, outputs, axis)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, meta.to_props())
    return model


def metadata_mutations(model: onnx.ModelProto, cases: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``cases`` copies of ``model`` with one to three ``facexai.*`` values replaced or removed."""
    rng = random.Random(seed)
    props = {p.key: p.value for p in model.metadata_props}
    keys = sorted(props)
    for case in range(cases):
        mutated, changes = dict(props), []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            key = rng.choice(keys)
            how = rng.choice(["hostile", "hostile", "truncate", "drop", "random"])
            if how == "drop":
                mutated.pop(key, None)
            elif how == "truncate":
                mutated[key] = props[key][: rng.randrange(len(props[key]) + 1)]
            elif how == "random":
                mutated[key] = rng.randbytes(rng.randint(0, 40)).decode("utf-8", errors="replace")
            else:
                mutated[key] = rng.choice(HOSTILE_VALUES)
            changes.append(f"{key[len(PREFIX) :]}:{how}")
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        del copy.metadata_props[:]
        helper.set_model_props(copy, mutated)
        yield f"case {case} ({', '.join(changes)}; seed {seed})", copy.SerializeToString()


def readers(path: Path) -> list[tuple[Callable[[], object], type[ValueError]]]:
    return [(lambda: read_metadata(path), MetadataError), (lambda: OnnxFaceModel(path), AuditModelError)]


def fuzz(tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    """Run both readers on metadata and byte mutations of both exports; count the outcomes."""
    outcomes: dict[str, int] = {}
    path = tmp_path / "case.onnx"
    for explained in (False, True):
        model = tiny_export(explained)
        streams = {
            "metadata": metadata_mutations(model, cases // 4, seed + explained),
            "bytes": mutations(model.SerializeToString(), cases // 4, seed + 2 + explained),
        }
        for kind, stream in streams.items():
            for label, data in stream:
                write(path, data)
                for read, error in readers(path):
                    outcome = check_reader(read, error, f"{kind} {label}", memory_bound=MEMORY_BOUND)
                    key = f"{kind} {error.__name__} {outcome}"
                    outcomes[key] = outcomes.get(key, 0) + 1
    logging.getLogger(__name__).info("fuzzed %d ONNX files (seed %d): %s", cases, seed, dict(sorted(outcomes.items())))
    return outcomes


def test_valid_tiny_exports_are_read(tmp_path: Path) -> None:
    for explained in (False, True):
        path = tmp_path / f"valid{explained}.onnx"
        write(path, tiny_export(explained).SerializeToString())
        assert read_metadata(path).explained == explained
        assert OnnxFaceModel(path).embedding_size == 3


def test_fuzz_onnx_metadata_and_bytes(tmp_path: Path) -> None:
    outcomes = fuzz(tmp_path, DEFAULT_CASES, seed=14)
    assert sum(outcomes.values()) == 2 * DEFAULT_CASES
    assert outcomes.get("metadata MetadataError refused", 0) > 0
    assert outcomes.get("bytes AuditModelError refused", 0) > 0


@pytest.mark.slow
def test_fuzz_onnx_metadata_and_bytes_many(tmp_path: Path) -> None:
    outcomes = fuzz(tmp_path, SLOW_CASES, seed=1414)
    assert sum(outcomes.values()) == 2 * SLOW_CASES
