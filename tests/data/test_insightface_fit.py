"""A short fit from the CLI on insightface-format fixtures (RecordIO + two .bin sets, both explained)."""

import numpy as np
import torch
import yaml

from facexai.cli import main
from facexai.data import write_face_records, write_verification_bin
from facexai.data.synthetic import generate_faces, sample_identities


def _faces(count: int, identities: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    ids = sample_identities(identities, torch.Generator().manual_seed(seed))
    labels = torch.arange(identities).repeat_interleave(count // identities)
    images, _ = generate_faces(labels, ids, 32, seed=seed)
    return images.permute(0, 2, 3, 1).numpy(), labels


def test_fit_on_recordio_and_two_bin_sets(tmp_path, capsys):
    images, labels = _faces(12, 3, seed=0)
    write_face_records(tmp_path / "train", [(img, int(lab)) for img, lab in zip(images, labels, strict=True)])
    pair_images, _ = _faces(40, 4, seed=1)  # 20 pairs: enough for 10 folds
    for name in ("lfw", "cfp_fp"):
        write_verification_bin(tmp_path / f"{name}.bin", list(pair_images), [i % 2 == 0 for i in range(20)])
    config = {
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "facexai.callbacks.ExplanationCallback",
                    "init_args": {
                        "explainers": ["gradcam"],
                        "max_samples": 2,
                        "explain_all_sets": True,
                        "metrics": {"deletion_auc": {"steps": 4}},
                    },
                }
            ],
            "logger": {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "logs")},
            },
        },
        "model": {
            "class_path": "facexai.models.VerificationModule",
            "init_args": {
                "backbone": "iresnet_mini",
                "num_identities": 3,
                "embedding_size": 16,
                "backbone_kwargs": {"img_size": 32},
            },
        },
        "data": {
            "class_path": "facexai.data.InsightFaceDataModule",
            "init_args": {
                "train_root": str(tmp_path / "train"),
                "image_size": 32,
                "batch_size": 4,
                "num_workers": 0,
                "val_bins": [str(tmp_path / "lfw.bin"), str(tmp_path / "cfp_fp.bin")],
            },
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]) == 0
    import csv

    with next((tmp_path / "logs").rglob("metrics.csv")).open() as fh:
        rows = list(csv.DictReader(fh))
    # each .bin set is validated, logged under its own name and explained by the callback
    for name in ("lfw", "cfp_fp"):
        for key in (f"val/{name}/roc_auc", f"val/xai/{name}/gradcam/deletion_auc_pos"):
            values = [float(r[key]) for r in rows if r.get(key)]
            assert values, key
            assert all(-1.0 <= v <= 1.0 for v in values), key
