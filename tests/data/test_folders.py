import numpy as np
import pytest
from PIL import Image

from facexai.data import FacePairsDataModule, ImageFolderDataModule, read_pairs
from facexai.data.folders import load_image


def _write_tree(root, names=("alice", "bob"), per=3, size=20):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(1, per + 1):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / name / f"{name}_{i:04d}.jpg"
            )


def test_lfw_pairs_formats(tmp_path):
    _write_tree(tmp_path)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t2\nalice\t1\t2\nalice\t1\tbob\t3\n")
    parsed = read_pairs(pairs, tmp_path)
    assert [p.issame for p in parsed] == [True, False]
    assert parsed[1].path_b == tmp_path / "bob" / "bob_0003.jpg"
    plain = tmp_path / "plain.txt"
    plain.write_text("alice/alice_0001.jpg bob/bob_0001.jpg 0\n# comment\nbob/bob_0001.jpg bob/bob_0002.jpg 1\n")
    assert [p.issame for p in read_pairs(plain, tmp_path)] == [False, True]


def test_pairs_file_with_missing_images(tmp_path):
    _write_tree(tmp_path)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("alice 1 9\ncarol 1 2\n")
    with pytest.raises(FileNotFoundError, match=r"3 missing images.*alice_0009"):
        read_pairs(pairs, tmp_path)


def test_pairs_file_with_malformed_line(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("alice 1 2\nthis line is wrong\n")
    with pytest.raises(ValueError, match=r"pairs.txt:2"):
        read_pairs(pairs, tmp_path, check_files=False)


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataModule(train_dir=str(tmp_path / "nowhere"))


def test_corrupt_image_names_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"bad\.jpg"):
        load_image(bad)


def test_image_folder_module_batches(tmp_path):
    _write_tree(tmp_path / "train", per=5)
    dm = ImageFolderDataModule(
        train_dir=str(tmp_path / "train"),
        image_size=16,
        val_fraction=0.2,
        batch_size=4,
        num_workers=0,
        augmentation="none",
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 16, 16)
    assert dm.num_classes == 2
    assert len(dm.val_set) == 2
    assert len(dm.train_set) == 8


def test_face_pairs_module(tmp_path):
    _write_tree(tmp_path / "train")
    _write_tree(tmp_path / "lfw", names=("x", "y"))
    pairs = tmp_path / "lfw_pairs.txt"
    pairs.write_text("x 1 2\nx 1 y 2\n")
    dm = FacePairsDataModule(
        train_dir=str(tmp_path / "train"),
        pairs_files=[str(pairs)],
        pairs_root=str(tmp_path / "lfw"),
        image_size=16,
        batch_size=2,
        num_workers=0,
    )
    (loader,) = dm.val_dataloader()
    batch = next(iter(loader))
    assert batch["issame"].tolist() == [True, False]
    assert batch["image_a"].shape == (2, 3, 16, 16)
    assert dm.val_set_names == ["lfw_pairs"]


def test_unknown_augmentation_preset(tmp_path):
    _write_tree(tmp_path / "train")
    with pytest.raises(ValueError, match="none, flip, face"):
        ImageFolderDataModule(train_dir=str(tmp_path / "train"), augmentation="mixup")


def _pairs_setup(tmp_path):
    _write_tree(tmp_path / "lfw", names=("x", "y"))
    pairs = tmp_path / "lfw_pairs.txt"
    pairs.write_text("x 1 2\nx 1 y 2\n")
    return pairs, tmp_path / "lfw"


def test_face_pairs_module_without_training_data(tmp_path):
    # Evaluating a pretrained model needs only the pairs: the module builds and validates, and
    # only asking for training batches fails, naming the missing argument.
    pairs, root = _pairs_setup(tmp_path)
    dm = FacePairsDataModule(pairs_files=str(pairs), pairs_root=str(root), image_size=16, batch_size=2, num_workers=0)
    batch = next(iter(dm.val_dataloader()[0]))
    assert batch["issame"].tolist() == [True, False]
    assert dm.num_classes is None
    assert len(dm.test_dataloader()) == 1
    with pytest.raises(ValueError, match=r"train_dataloader.*train_dir was not given"):
        dm.train_dataloader()


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({"pairs_root": "."}, "pairs_files"),
        ({"pairs_files": "p.txt"}, "pairs_root"),
        ({"pairs_files": [], "pairs_root": "."}, "pairs_files"),
    ],
)
def test_face_pairs_module_requires_pairs(kwargs, missing):
    with pytest.raises(ValueError, match=f"FacePairsDataModule needs {missing}"):
        FacePairsDataModule(**kwargs)


def test_insightface_module_with_bins_only(tmp_path):
    from facexai.data import InsightFaceDataModule, write_verification_bin

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)]
    path = write_verification_bin(tmp_path / "lfw.bin", images, [True, False, True])
    dm = InsightFaceDataModule(val_bins=str(path), image_size=16, batch_size=8, num_workers=0)
    batch = next(iter(dm.val_dataloader()[0]))
    assert batch["image_a"].shape == (3, 3, 16, 16)
    assert batch["issame"].tolist() == [True, False, True]
    assert dm.val_set_names == ["lfw"]
    assert dm.num_classes is None
    with pytest.raises(ValueError, match=r"train_root was not given.*train\.rec"):
        dm.train_dataloader()
    with pytest.raises(ValueError, match="InsightFaceDataModule needs val_bins"):
        InsightFaceDataModule(train_root=str(tmp_path))


def test_image_folder_module_with_validation_folder_only(tmp_path):
    _write_tree(tmp_path / "val", per=2)
    dm = ImageFolderDataModule(val_dir=str(tmp_path / "val"), image_size=16, batch_size=8, num_workers=0)
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].tolist() == [0, 0, 1, 1]
    assert dm.class_names == ["alice", "bob"]
    with pytest.raises(ValueError, match="train_dir was not given"):
        dm.train_dataloader()
    with pytest.raises(ValueError, match=r"needs train_dir .* or val_dir"):
        ImageFolderDataModule()
