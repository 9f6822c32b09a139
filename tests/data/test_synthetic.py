import torch

from facexai.data import SyntheticFacesDataModule
from facexai.data.synthetic import generate_faces, make_pairs, render_faces, sample_identities


def _ids(n=6, seed=0):
    return sample_identities(n, torch.Generator().manual_seed(seed))


def test_generation_is_deterministic_per_seed():
    ids = _ids()
    labels = torch.arange(6).repeat(2)
    a, ma = generate_faces(labels, ids, 48, seed=3)
    b, mb = generate_faces(labels, ids, 48, seed=3)
    c, _ = generate_faces(labels, ids, 48, seed=4)
    assert a.dtype == torch.uint8
    assert a.shape == (12, 3, 48, 48)
    assert ma.shape == (12, 48, 48)
    assert torch.equal(a, b)
    assert torch.equal(ma, mb)
    assert not torch.equal(a, c)


def test_identity_changes_pixels_only_inside_identity_masks():
    # Same nuisance draws (same generator state), two different identities: every pixel outside
    # both identities' masks must be (almost) unchanged -- identity lives only in the masks.
    ids = _ids(2)
    img0, mask0 = render_faces(ids.take(torch.tensor([0])), 64, torch.Generator().manual_seed(7))
    img1, mask1 = render_faces(ids.take(torch.tensor([1])), 64, torch.Generator().manual_seed(7))
    diff = (img0.float() - img1.float()).abs().amax(dim=1)[0]
    union = (mask0 | mask1)[0]
    # dilate the union by 2 px to cover anti-aliased edges
    grown = torch.nn.functional.max_pool2d(union[None, None].float(), 5, 1, 2)[0, 0].bool()
    assert diff[~grown].max() <= 3  # at most 3 grey levels from soft-edge tails
    assert diff[union].max() > 60  # but the identity regions really differ


def test_masks_cover_eyes_brows_and_mark():
    ids = _ids(4)
    _, masks = generate_faces(torch.arange(4), ids, 64, seed=0)
    share = masks.float().mean(dim=(1, 2))
    assert ((share > 0.01) & (share < 0.2)).all()
    # the masks sit in the face, not at the border
    assert not masks[:, :4].any()
    assert not masks[:, -4:].any()


def test_pairs_are_half_genuine_and_labels_match():
    labels = torch.arange(5).repeat_interleave(3)
    a, b, same = make_pairs(labels, 20, torch.Generator().manual_seed(0))
    assert same.sum() == 10
    assert torch.equal(labels[a] == labels[b], same)
    assert (a != b).all()


def test_datamodule_batches():
    dm = SyntheticFacesDataModule(
        num_identities=4,
        images_per_identity=3,
        num_val_identities=3,
        val_images_per_identity=2,
        num_val_pairs=6,
        image_size=32,
        batch_size=4,
    )
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert set(train) == {"image", "label", "mask"}
    assert train["image"].shape == (4, 3, 32, 32)
    assert train["image"].min() >= -1
    assert train["image"].max() <= 1
    val = next(iter(dm.val_dataloader()))
    assert set(val) == {"image_a", "image_b", "issame", "mask_a", "mask_b", "index"}
    assert val["index"].tolist() == [0, 1, 2, 3]  # dataset order: the pair index the 10-fold split uses
    assert dm.num_classes == 4
    assert dm.val_set_names == ["synthetic"]


def test_classification_task_validates_on_training_identities():
    dm = SyntheticFacesDataModule(
        task="classification",
        num_identities=3,
        images_per_identity=2,
        val_images_per_identity=2,
        image_size=32,
        batch_size=8,
    )
    dm.setup()
    val = next(iter(dm.val_dataloader()))
    assert val["label"].tolist() == [0, 0, 1, 1, 2, 2]


def test_augmentation_moves_mask_with_image():
    dm = SyntheticFacesDataModule(
        num_identities=2,
        images_per_identity=2,
        image_size=32,
        batch_size=4,
        augmentation={"transform": {"__class_fullname__": "HorizontalFlip", "p": 1.0}},
    )
    dm.setup()
    plain = SyntheticFacesDataModule(num_identities=2, images_per_identity=2, image_size=32, batch_size=4)
    plain.setup()
    flipped, original = dm.train_set[0], plain.train_set[0]
    torch.testing.assert_close(flipped["image"], original["image"].flip(-1))
    assert torch.equal(flipped["mask"], original["mask"].flip(-1))
