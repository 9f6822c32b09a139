"""``facexai evaluate``: report files, CSV contents, user errors, and good-vs-bad maps.

Models are tiny and untrained (seeded from the config); images are 32 px synthetic faces.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from facexai import cli
from facexai.data.synthetic import generate_faces, sample_identities
from facexai.data.transforms import normalise
from facexai.evaluate import (
    build_explainers,
    evaluate_main,
    instantiate,
    inverted_maps,
    random_maps,
)
from facexai.explain import Target, available_explainers
from facexai.pipeline import ExplanationInputs, MetricSuite, View, ViewSpec, parse_metric_specs

VERIFICATION_YAML = """\
seed_everything: 0
model:
  class_path: facexai.models.VerificationModule
  init_args:
    backbone: iresnet_mini
    num_identities: 4
    embedding_size: 16
    backbone_kwargs:
      img_size: 32
data:
  class_path: facexai.data.SyntheticFacesDataModule
  init_args:
    task: verification
    num_identities: 4
    images_per_identity: 2
    num_val_identities: 4
    val_images_per_identity: 2
    num_val_pairs: 4
    image_size: 32
    batch_size: 4
"""

CLASSIFIER_YAML = """\
seed_everything: 0
model:
  class_path: ClassifierModule
  init_args:
    backbone: iresnet_mini
    num_classes: 4
    backbone_kwargs:
      img_size: 32
data:
  class_path: SyntheticFacesDataModule
  init_args:
    task: classification
    num_identities: 4
    images_per_identity: 1
    val_images_per_identity: 1
    image_size: 32
    batch_size: 4
"""

FAST = [
    "--max-samples",
    "2",
    "--batch-size",
    "2",
    "--steps",
    "4",
    "--verification-steps",
    "2",
    "--device",
    "cpu",
    "--no-progress",
]
PER_VIEW = [
    "deletion_auc",
    "insertion_auc",
    "average_drop",
    "increase_in_confidence",
    "average_drop_in_deletion",
    "pointing_game",
    "energy_pointing_game",
    "sparsity",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_pairs_writes_report_with_every_metric(tmp_path: Path) -> None:
    config, out = _write(tmp_path, VERIFICATION_YAML), tmp_path / "eval"
    argv = ["--config", str(config), "--explainers", "gradcam", "gradcam++", "--out", str(out), *FAST]
    assert evaluate_main(argv) == 0
    for name in (
        "results.md",
        "results.csv",
        "results.json",
        "curves_overlay.png",
        "curves_gradcam.png",
        "curves_gradcam++.png",
        "curves_random.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = _read_csv(out / "results.csv")
    names = [row["explainer"] for row in rows]
    assert names[:3] == ["gradcam", "gradcam++", "random"]
    assert names[3] in ("inverted gradcam", "inverted gradcam++")
    assert (out / f"curves_{names[3].replace(' ', '_')}.png").is_file()
    expected = [f"{m}_{v}" for v in ("pos", "neg") for m in PER_VIEW]
    expected += ["verification_deletion_auc", "verification_insertion_auc"]
    assert list(rows[0]) == ["explainer", "kind", "seconds_per_map", "maps", *expected]
    for row in rows:
        assert all(math.isfinite(float(row[column])) for column in expected), row
        assert int(row["maps"]) == 8  # 2 pairs x 2 sides x (e+, e-)
    assert float(rows[0]["seconds_per_map"]) > 0
    assert rows[2]["seconds_per_map"] == ""
    report = (out / "results.md").read_text()
    assert "deletion_auc_steps-4_baseline-zero_score-cosine" in report
    assert "*random*" in report
    assert "Del AUC e+ ↓" in report
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"gallery.png", "gallery_neg.png", "curves_overlay.png", "curves_gradcam.png", "results.md"} <= set(links)
    assert all((out / link).is_file() for link in links)


def test_index_escapes_row_labels(tmp_path: Path) -> None:
    from facexai.evaluate import EvaluationResult, EvaluationSettings
    from facexai.evaluate.report import write_report

    curve = torch.linspace(1, 0, 3)
    rows = [
        EvaluationResult(
            "<b>cam</b> & co",
            "explainer",
            {"deletion_auc": 0.5},
            {"deletion_auc": "d"},
            {"deletion_auc": False},
            {"deletion": {"": curve}},
            0.1,
            2,
        )
    ]
    paths = write_report(rows, EvaluationSettings(), tmp_path, {"model": "M<1>", "config": "a&b.yaml"})
    page = paths["html"].read_text()
    assert "&lt;b&gt;cam&lt;/b&gt; &amp; co" in page
    assert "<b>cam" not in page
    assert "M&lt;1&gt;" in page
    assert "<code>a&amp;b.yaml</code>" in page
    assert "gallery.png" not in page  # no pair samples given: no gallery, and no dead link


def _strict_json(text: str) -> object:
    """json.loads that refuses the non-standard NaN/Infinity tokens, as strict parsers do."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_results_json_is_standard_json_with_null_for_nan(tmp_path: Path) -> None:
    from facexai.evaluate import EvaluationResult, EvaluationSettings
    from facexai.evaluate.report import write_report

    curve = torch.tensor([1.0, float("nan"), 0.0])
    values = {"deletion_auc": 0.5, "verification_deletion_auc": math.nan, "average_drop": math.inf}
    rows = [EvaluationResult("gradcam", "explainer", values, {}, {}, {"deletion": {"": curve}}, 0.1, 2)]
    paths = write_report(rows, EvaluationSettings(), tmp_path, {"model": "M", "score": -math.inf})
    payload = _strict_json(paths["json"].read_text())
    row = payload["results"][0]
    assert row["values"] == {"deletion_auc": 0.5, "verification_deletion_auc": None, "average_drop": None}
    assert row["curves"]["deletion"]["score"] == [1.0, None, 0.0]
    assert payload["context"]["score"] is None


def test_report_files_are_replaced_only_when_complete(tmp_path: Path) -> None:
    """A writer failing half-way leaves the previous results.csv, not a truncated one."""
    from facexai.evaluate import EvaluationResult
    from facexai.evaluate.report import write_csv

    path = tmp_path / "results.csv"
    path.write_text("the previous run\n")
    rows = [
        EvaluationResult("ok", "explainer", {"sparsity": 0.5}),
        EvaluationResult("bad", "explainer", {"sparsity": "not a number"}),
    ]
    with pytest.raises(ValueError, match="format code"):
        write_csv(rows, path)
    assert path.read_text() == "the previous run\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_output_folder_may_not_be_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out inside the image root, equal to the config, or over the pairs file: refused before loading."""
    images, out = tmp_path / "images", tmp_path / "eval"
    images.mkdir()
    out.mkdir()
    pairs = out / "results.csv"
    pairs.write_text("a.png b.png 1\n")
    model = tmp_path / "model.pth"
    model.write_bytes(b"not loaded")
    base = ["evaluate", "--model", str(model), "--explainers", "gradcam", *FAST]
    cases = [
        (["--pairs", str(pairs), "--images-root", str(images), "--out", str(images / "eval")], images),
        (["--pairs", str(pairs), "--images-root", str(images), "--out", str(out)], pairs),
        (["--pairs", str(pairs), "--images-root", str(images), "--out", str(model)], model),
    ]
    for extra, clobbered in cases:
        assert cli.main([*base, *extra]) == 2
        assert f"would overwrite the input {clobbered}" in capsys.readouterr().err
    assert pairs.read_text() == "a.png b.png 1\n"
    assert model.read_bytes() == b"not loaded"
    assert sorted(p.name for p in images.iterdir()) == []
    config = _write(tmp_path, VERIFICATION_YAML)
    assert cli.main(["evaluate", "--config", str(config), "--explainers", "gradcam", "--out", str(config)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert config.read_text() == VERIFICATION_YAML


def test_evaluate_classifier_with_checkpoint_and_options(tmp_path: Path) -> None:
    config, out = _write(tmp_path, CLASSIFIER_YAML), tmp_path / "eval"
    torch.manual_seed(1)
    module = instantiate(
        {
            "class_path": "ClassifierModule",
            "init_args": {"backbone": "iresnet_mini", "num_classes": 4, "backbone_kwargs": {"img_size": 32}},
        },
        "model",
    )
    torch.save({"state_dict": module.state_dict()}, tmp_path / "model.ckpt")
    options = '{"cam2": {"method": "gradcam", "target_layer": "layer3"}}'
    argv = [
        "--config",
        str(config),
        "--ckpt_path",
        str(tmp_path / "model.ckpt"),
        "--explainers",
        "cam2",
        "--explainer-options",
        options,
        "--out",
        str(out),
        *FAST,
    ]
    assert evaluate_main(argv) == 0
    rows = _read_csv(out / "results.csv")
    assert [row["explainer"] for row in rows] == ["cam2", "random", "inverted cam2"]
    assert list(rows[0])[4:] == PER_VIEW
    assert all(math.isfinite(float(rows[0][column])) for column in PER_VIEW)
    assert "score-probability" in (out / "results.md").read_text()


def test_unknown_explainer_lists_the_available_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, VERIFICATION_YAML)
    with pytest.raises(ValueError, match="Unknown explainer 'gradkam'") as err:
        evaluate_main(["--config", str(config), "--explainers", "gradkam", *FAST])
    assert all(name in str(err.value) for name in available_explainers())
    assert cli.main(["evaluate", "--config", str(config), "--explainers", "gradkam"]) == 2
    assert "Available: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("names", "options", "message"),
    [
        (["gradcam"], {"fame": {"iterations": 5}}, "not in --explainers"),
        (["gradcam"], {"gradcam": {"no_such_option": 1}}, "[Ii]nvalid options"),
        (["random"], {}, "reserved"),
    ],
)
def test_bad_explainer_options_are_user_errors(names: list[str], options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_explainers(names, options)


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        evaluate_main(["--config", str(tmp_path / "missing.yaml"), "--explainers", "gradcam"])
    with pytest.raises(ValueError, match="does not name an importable class"):
        instantiate({"class_path": "facexai.models.NoSuchModule"}, "model")
    config = _write(tmp_path, VERIFICATION_YAML)
    torch.save({"state_dict": {"not_a_weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="does not fit the model built from the config"):
        evaluate_main(
            ["--config", str(config), "--ckpt_path", str(tmp_path / "other.ckpt"), "--explainers", "gradcam", *FAST]
        )
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        evaluate_main(
            ["--config", str(config), "--ckpt_path", str(tmp_path / "x.ckpt"), "--explainers", "gradcam", *FAST]
        )


def test_config_class_path_cannot_run_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``class_path: subprocess.Popen`` once ran a command; now it is refused before any import."""
    marker = tmp_path / "pwned"
    evil = {
        **yaml.safe_load(VERIFICATION_YAML),
        "model": {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}},
    }
    config = _write(tmp_path, yaml.safe_dump(evil))
    assert cli.main(["evaluate", "--config", str(config), "--explainers", "gradcam", *FAST]) == 2
    assert f"config {config}: model.class_path 'subprocess.Popen' is refused" in capsys.readouterr().err
    assert not marker.exists()
    nested = VERIFICATION_YAML.replace(
        "      img_size: 32\n",
        f"      img_size: 32\n      act:\n"
        f"        class_path: subprocess.Popen\n        init_args:\n"
        f"          args: [touch, {marker}]\n",
    )
    with pytest.raises(ValueError, match=r"backbone_kwargs.act.class_path 'subprocess.Popen' is refused"):
        evaluate_main(["--config", str(_write(tmp_path, nested)), "--explainers", "gradcam", *FAST])
    assert not marker.exists()


def test_malformed_yaml_and_bad_checkpoint_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, VERIFICATION_YAML.replace("    batch_size: 4\n", "    batch_size: [4\n"))
    assert cli.main(["evaluate", "--config", str(config), "--explainers", "gradcam", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"facexai: error: config {config}: line ")
    assert err.count("\n") == 1
    config = _write(tmp_path, VERIFICATION_YAML)
    junk = tmp_path / "notes.ckpt"
    junk.write_text("not a checkpoint")
    argv = ["evaluate", "--config", str(config), "--ckpt_path", str(junk), "--explainers", "gradcam", *FAST]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{junk} is not a readable facexai/Lightning checkpoint" in err
    assert "weights_only=False" not in err
    assert err.count("\n") == 1


class _MaskWeighted(Target):
    """score(x) = sum of x * weights over the pixels: a scorer that reads only the weighted pixels."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output * self.weights.flatten(1).to(output)).sum(1)

    def __len__(self) -> int:
        return len(self.weights)

    def select(self, index: torch.Tensor) -> _MaskWeighted:
        return _MaskWeighted(self.weights[index])

    def to(self, device: torch.device) -> _MaskWeighted:
        return _MaskWeighted(self.weights.to(device))


def test_ground_truth_mask_beats_random_and_inverted_maps() -> None:
    """On a scorer that reads only identity-mask pixels, the mask is the perfect explanation.

    score(x) = sum over mask pixels of x * sign(x_clean): deleting a mask pixel lowers it,
    deleting anything else changes nothing. The mask used as a map must then beat a random map,
    which must beat the inverted mask, on deletion, insertion and both pointing games.
    """
    identities = sample_identities(4, torch.Generator().manual_seed(0))
    uint8, masks = generate_faces(torch.arange(4).repeat_interleave(2), identities, 32, seed=1)
    images = normalise(uint8)
    target = _MaskWeighted(masks[:, None].float() * images.sign())
    view = ViewSpec("", "", "mask-weighted-sum", False, "difference")
    truth = masks.float()
    maps = {
        "truth": truth,
        "random": random_maps(0)(0, view, images, target),
        "inverted": inverted_maps([{"": truth}])(0, view, images, target),
    }
    specs = parse_metric_specs(
        {
            "deletion_auc": {"steps": 16},
            "insertion_auc": {"steps": 16},
            "pointing_game": {},
            "energy_pointing_game": {},
        },
        "evaluate",
        dataset_level=True,
    )
    inputs = ExplanationInputs(images, target, images.flatten(1), masks=masks)
    values = {}
    for name, method_maps in maps.items():
        suite = MetricSuite(specs, [0.5] * 3, [0.5] * 3, owner="evaluate")
        suite.update("", [View(view, method_maps, target)], inputs, torch.nn.Flatten())
        values[name] = {key: float(value) for key, value in suite.compute().items()}
    truth_v, random_v, inverted_v = values["truth"], values["random"], values["inverted"]
    assert truth_v["deletion_auc"] < random_v["deletion_auc"] < inverted_v["deletion_auc"]
    assert truth_v["insertion_auc"] > random_v["insertion_auc"] > inverted_v["insertion_auc"]
    assert truth_v["pointing_game"] == 1.0
    assert inverted_v["pointing_game"] == 0.0
    assert truth_v["pointing_game"] > random_v["pointing_game"]
    assert truth_v["energy_pointing_game"] == pytest.approx(1.0)
    assert truth_v["energy_pointing_game"] > random_v["energy_pointing_game"] > inverted_v["energy_pointing_game"]
