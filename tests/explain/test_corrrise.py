"""CorrRISE (Mery & Morris, WACV 2022; FAME's face baseline, arXiv 2605.12017)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from facexai.explain import ClassTarget, SimilarityTarget, create_explainer
from facexai.explain.base import explanation_mode
from facexai.explain.corrrise import CorrRISE, average_ranks, spearman_maps


def test_paper_defaults():
    explainer = create_explainer("corrrise")
    assert (explainer.n_masks, explainer.patch_size, explainer.n_patches) == (500, 30, 3)


def test_masks_are_seeded_patches_that_fit():
    explainer = CorrRISE(n_masks=50, patch_size=6, n_patches=3, seed=4)
    masks = explainer.masks(20, 24)
    assert masks.shape == (50, 20, 24)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    hidden = (1 - masks).sum(dim=(1, 2))
    assert (hidden >= 36).all()
    assert (hidden <= 3 * 36).all()
    assert (hidden < 3 * 36).any()  # overlapping patches do occur
    assert torch.equal(masks, CorrRISE(n_masks=50, patch_size=6, seed=4).masks(20, 24))
    assert not torch.equal(masks, CorrRISE(n_masks=50, patch_size=6, seed=5).masks(20, 24))
    # placements range over every position where the patch fits, corners included
    many = CorrRISE(n_masks=2000, patch_size=4, n_patches=1).masks(10, 10)
    assert (many.min(dim=0).values == 0).all()
    corners = [(0, 0), (0, 9), (9, 0), (9, 9)]
    counts = torch.tensor([(many[:, i, j] == 0).sum().item() for i, j in corners], dtype=torch.float32)
    assert counts.min() > 10  # about 2000 / 49 each


def test_one_patch_is_a_square_of_the_given_side():
    masks = CorrRISE(n_masks=10, patch_size=5, n_patches=1).masks(12, 12)
    for mask in masks:
        rows, cols = torch.nonzero(mask == 0, as_tuple=True)
        assert rows.max() - rows.min() == 4
        assert cols.max() - cols.min() == 4
        assert len(rows) == 25


def test_average_ranks_match_scipy():
    scores = torch.tensor([[0.3, 0.1, 0.3, 0.9, 0.1, 0.3], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    expected = torch.from_numpy(stats.rankdata(scores.numpy(), axis=1)).float()
    torch.testing.assert_close(average_ranks(scores), expected)


def test_spearman_maps_match_scipy():
    gen = torch.Generator().manual_seed(2)
    keep = (torch.rand(40, 4, 5, generator=gen) > 0.3).float()
    keep[:, 0, 0] = 1.0  # a pixel no mask hides: correlation undefined -> 0
    scores = torch.randint(0, 6, (2, 40), generator=gen).float()  # many ties
    maps = spearman_maps(scores, keep)
    for n in range(2):
        for i in range(4):
            for j in range(5):
                if (i, j) == (0, 0):
                    assert maps[n, i, j] == 0
                    continue
                rho = stats.spearmanr(keep[:, i, j].numpy(), scores[n].numpy()).statistic
                assert abs(maps[n, i, j].item() - rho) < 1e-5


class RegionScore(nn.Module):
    """Score = mean of the red channel inside a fixed box: the box is the whole evidence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, 0, 8:16, 4:12].mean(dim=(1, 2))
        return torch.stack([inside, -inside], dim=1)


def test_map_finds_the_evidence_and_the_sign_follows_the_class():
    images = torch.ones(1, 3, 24, 24)
    explainer = create_explainer("corrrise", n_masks=200, patch_size=6, seed=1)
    for label, where in ((0, "inside"), (1, "nowhere")):
        maps = explainer(RegionScore(), images, ClassTarget([label]))
        inside = maps[0, 8:16, 4:12].mean()
        outside = torch.cat([maps[0, :, 14:].flatten(), maps[0, 18:, :].flatten()]).mean()
        if where == "inside":
            assert inside > 0.5
            assert outside < 0.1
        else:
            assert maps.max() <= 1
            assert inside < 0.2


def test_dissimilar_is_the_negated_similar_correlation(images, embedder, pair_target):
    explainer = CorrRISE(n_masks=24, patch_size=8)
    with explanation_mode(embedder):
        similar = explainer.explain(embedder, images, pair_target("similar"))
        dissimilar = explainer.explain(embedder, images, pair_target("dissimilar"))
    torch.testing.assert_close(dissimilar, -similar, atol=1e-6, rtol=0)
    assert similar.abs().max() > 0.1


def test_chunking_does_not_change_the_map(images, classifier):
    target = ClassTarget([0, 1, 2])
    maps = [
        create_explainer("corrrise", n_masks=20, patch_size=8, batch_size=b)(classifier, images, target)
        for b in (3, 1000)
    ]
    torch.testing.assert_close(maps[0], maps[1], atol=1e-6, rtol=0)


def test_fill_value_is_used_per_channel():
    seen = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return x.mean(dim=(2, 3))

    explainer = CorrRISE(n_masks=4, patch_size=3, n_patches=1, fill=(-1.0, 2.0, 0.5))
    explainer(Spy(), torch.zeros(1, 3, 8, 8), ClassTarget([0]))
    (masked,) = seen  # one scoring pass: the four masked copies of the image
    hidden = explainer.masks(8, 8) == 0
    for channel, value in enumerate((-1.0, 2.0, 0.5)):
        assert (masked[:, channel][hidden] == value).all()
        assert (masked[:, channel][~hidden] == 0).all()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"n_masks": 1}, ValueError, "at least 2"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"fill": float("nan")}, ValueError, "fill"),
        ({"fill": (0.0, 1.0)}, ValueError, "fill"),
        ({"fill": "black"}, ValueError, "fill"),
    ],
)
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        CorrRISE(**options)


def test_patch_larger_than_image_is_refused(images, classifier):
    with pytest.raises(ValueError, match="patch_size=40"):
        CorrRISE(n_masks=4, patch_size=40)(classifier, images, ClassTarget([0, 1, 2]))


def test_similarity_target_is_split_across_chunks(images, embedder):
    """Chunks of 5 rows straddle images: each row must meet its own image's reference."""
    with torch.no_grad():
        reference = embedder(images.flip(0))
    explainer = CorrRISE(n_masks=12, patch_size=8, batch_size=5)
    batched = explainer(embedder, images, SimilarityTarget(reference))
    single = explainer(embedder, images[1:2], SimilarityTarget(reference[1:2]))
    torch.testing.assert_close(single[0], batched[1], atol=5e-5, rtol=0)
