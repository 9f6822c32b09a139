"""The comparison grid: every explainer side by side on face pairs, in TensorBoard and standalone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from callback_models import FAST_METRICS, events, faces, trainer, verification_module
from PIL import Image

from facexai.callbacks import ExplanationCallback
from facexai.callbacks.comparison import FRAMES, OUTLINE, mask_outline
from facexai.callbacks.overlays import colormap_lut
from facexai.callbacks.rendering import ComparisonLayout, add_picture, comparison_grid
from facexai.data.transforms import denormalise


def _pairs(
    n: int = 2, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, 3, size, size, generator=gen), torch.rand(n, 3, size, size, generator=gen)
    maps = {
        name: (torch.rand(n, size, size, generator=gen), torch.rand(n, size, size, generator=gen))
        for name in ("fame", "gradcam")
    }
    return a, b, maps


def _square_masks(n: int, size: int, lo: int, hi: int) -> torch.Tensor:
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, lo:hi, lo:hi] = True
    return masks


def _tile(picture: np.ndarray, layout: ComparisonLayout, row: int, column: int) -> np.ndarray:
    y, x = layout.tile_origin(row, column)
    return picture[y : y + layout.tile, x : x + layout.tile]


# ---------------------------------------------------------------- the renderer on its own


def test_size_and_face_tiles_follow_the_layout() -> None:
    a, b, maps = _pairs()
    picture = comparison_grid(a, b, maps, ["genuine | cos=0.90", "impostor | cos=0.10"], tile_size=112)
    layout = ComparisonLayout(rows=2, methods=2, tile=112)
    assert picture.dtype == np.uint8
    assert picture.shape == (*layout.size, 3)
    # 6 columns of 112 px tiles (A, 2 maps, B, 2 maps) plus the colour bar: wider than the tiles.
    assert picture.shape[1] > 6 * 112
    assert picture.shape[0] > 2 * 112
    # Column 0 is face A and column 3 face B, bilinearly resized, unaltered without masks.
    expected_a = F.interpolate(a, size=(112, 112), mode="bilinear", align_corners=False).clamp(0, 1)
    expected_b = F.interpolate(b, size=(112, 112), mode="bilinear", align_corners=False).clamp(0, 1)
    for row in range(2):
        for column, faces_ in ((0, expected_a), (3, expected_b)):
            want = (faces_[row].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            np.testing.assert_array_equal(_tile(picture, layout, row, column), want)
    # A map tile differs from its face (the overlay is drawn) and from the other method's map.
    assert not np.array_equal(_tile(picture, layout, 0, 1), _tile(picture, layout, 0, 0))
    assert not np.array_equal(_tile(picture, layout, 0, 1), _tile(picture, layout, 0, 2))


def test_mask_outline_is_drawn_on_the_mask_edge_of_every_tile_of_its_face() -> None:
    a, b, maps = _pairs(n=1, size=32)
    masks_a = _square_masks(1, 32, 8, 24)  # tile 112: 3.5x, edge at 28 .. 84
    picture = comparison_grid(a, b, maps, masks_a=masks_a, tile_size=112)
    layout = ComparisonLayout(1, 2, 112)
    edge = mask_outline(masks_a, 112)[0].numpy()
    assert edge.sum() > 0
    assert not edge[56, 56]
    assert edge[28, 56]
    assert edge[56, 83]
    for column in range(3):  # A and its two maps
        tile = _tile(picture, layout, 0, column)
        assert (tile[edge] == OUTLINE).all()
        assert not (tile[~edge] == OUTLINE).all(axis=-1).any()  # nothing else is outline green
    for column in range(3, 6):  # B has no mask: no outline
        assert not (_tile(picture, layout, 0, column) == OUTLINE).all(axis=-1).any()


def test_mask_outline_is_two_pixels_wide_on_112_px_tiles() -> None:
    edge = mask_outline(_square_masks(1, 16, 4, 12), 112)[0]
    row = edge[56].nonzero()[:, 0].tolist()  # across the middle: left and right edges
    assert row == [28, 29, 82, 83]


def test_e_plus_and_e_minus_have_different_frames_and_the_colour_bar_runs_high_to_low() -> None:
    a, b, maps = _pairs()
    plus = comparison_grid(a, b, maps, title="e+  what makes A and B match", cmap="jet")
    minus = comparison_grid(a, b, maps, title="e-  what pushes A and B apart", cmap="jet")
    assert tuple(plus[0, 0]) == FRAMES["e+"]
    assert tuple(minus[-1, -1]) == FRAMES["e-"]
    assert tuple(comparison_grid(a, b, maps, frame=(1, 2, 3))[0, 0]) == (1, 2, 3)
    y0, y1, x0, x1 = ComparisonLayout(2, 2, 112).bar_box
    lut = (colormap_lut("jet") * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(plus[y0, x0:x1], np.repeat(lut[255][None], x1 - x0, axis=0))  # top: high
    np.testing.assert_array_equal(plus[y1 - 1, x0:x1], np.repeat(lut[0][None], x1 - x0, axis=0))  # bottom: low


def test_maps_at_another_resolution_are_resized_and_text_is_drawn() -> None:
    a, b, _ = _pairs()
    maps = {"gradcam": (torch.rand(2, 4, 4), torch.rand(2, 4, 4))}
    picture = comparison_grid(a, b, maps, ["genuine | cos=0.90", "impostor | cos=0.10"], title="e+")
    layout = ComparisonLayout(2, 1, 112)
    y, x = layout.tile_origin(0, 0)
    assert picture[y - 14 : y - 2, x : x + 100].min() < 100  # dark caption text above the first row


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tile_size": 0}, r"tile_size must be a positive integer, got 0"),
        ({"cmap": "jett"}, r"Unknown colormap 'jett'\. Did you mean jet"),
        ({"maps": {}}, r"maps is empty"),
        ({"maps": {"fame": torch.rand(2, 32, 32)}}, r"maps\['fame'\] must be a tuple \(maps of A, maps of B\)"),
        (
            {"maps": {"fame": (torch.rand(2, 32, 32), torch.rand(3, 32, 32))}},
            r"maps\['fame'\] of B must be a tensor \(2, h, w\), got Tensor\(3, 32, 32\)",
        ),
        ({"captions": ["one"]}, r"got 1 captions for 2 pairs"),
        ({"masks_a": torch.zeros(2, 16, 16, dtype=torch.bool)}, r"masks_a must be None or a tensor \(2, 32, 32\)"),
        ({"images_b": torch.rand(2, 32, 32)}, r"images_b must be a tensor \(N, 3, H, W\), got Tensor\(2, 32, 32\)"),
    ],
)
def test_bad_input_names_the_problem(change: dict, match: str) -> None:
    a, b, maps = _pairs()
    arguments = {"images_a": a, "images_b": b, "maps": maps, **change}
    with pytest.raises(ValueError, match=match):
        comparison_grid(**arguments)


# ---------------------------------------------------------------- logged by the callback


def _decoded(acc, tag: str) -> np.ndarray:
    (image,) = acc.Images(tag)
    return np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))


def test_callback_logs_comparison_grids_of_all_explainers_with_mask_outlines(tmp_path: Path) -> None:
    datamodule, module = faces("verification"), verification_module()
    callback = ExplanationCallback(
        explainers=["gradcam", "liftcam"], metrics=FAST_METRICS, max_samples=3, log_curves=False, max_time_share=None
    )
    run = trainer(tmp_path, [callback])
    run.validate(module, datamodule, verbose=False)

    acc = events(run.logger.log_dir)
    tags = set(acc.Tags()["images"])
    assert {"xai/compare/pairs_pos", "xai/compare/pairs_neg", "xai/gradcam/pairs_pos", "xai/liftcam/pairs_neg"} <= tags
    layout = ComparisonLayout(rows=3, methods=2, tile=112)  # 3 pairs, default 112 px tiles
    batch = next(iter(datamodule.val_dataloader()))
    for suffix, frame in (("pos", FRAMES["e+"]), ("neg", FRAMES["e-"])):
        logged = _decoded(acc, f"xai/compare/pairs_{suffix}")
        assert logged.shape == (*layout.size, 3)
        assert tuple(logged[0, 0]) == frame
        # The logged picture is exactly the public renderer applied to the explained batch.
        maps = {
            name: (callback.last_maps[name][suffix][:3], callback.last_maps[name][suffix][3:])
            for name in ("gradcam", "liftcam")
        }
        a, b = denormalise(batch["image_a"][:3]), denormalise(batch["image_b"][:3])
        title = (
            f"{'e+  what makes A and B match' if suffix == 'pos' else 'e-  what pushes A and B apart'}  epoch 0  step 0"
        )
        outputs = module.backbone.eval()(torch.cat([batch["image_a"][:3], batch["image_b"][:3]]))
        cosine = F.cosine_similarity(outputs[:3], outputs[3:]).tolist()
        captions = [
            f"{'genuine' if s else 'impostor'} | cos={c:.2f}"
            for s, c in zip(batch["issame"][:3].tolist(), cosine, strict=False)
        ]
        expected = comparison_grid(a, b, maps, captions, batch["mask_a"][:3], batch["mask_b"][:3], title=title)
        np.testing.assert_array_equal(logged, expected)
    # The synthetic identity masks are outlined where their edges are, on A and on B.
    logged = _decoded(acc, "xai/compare/pairs_pos")
    for column, masks in ((0, batch["mask_a"]), (3, batch["mask_b"])):
        edge = mask_outline(masks[:1], 112)[0].numpy()
        assert edge.sum() > 50
        assert (_tile(logged, layout, 0, column)[edge] == OUTLINE).all()
    assert callback.last_grids["xai/compare/pairs_pos"].shape == (3, *layout.size)


def test_tile_size_colormap_and_switching_the_comparison_off(tmp_path: Path) -> None:
    datamodule, module = faces("verification"), verification_module()
    callback = ExplanationCallback(
        explainers=["gradcam"],
        metrics=FAST_METRICS,
        max_samples=2,
        tile_size=64,
        colormap="jet",
        explain_dissimilar=False,
        log_curves=False,
        max_time_share=None,
        png_dir=str(tmp_path / "png"),
    )
    run = trainer(tmp_path, [callback])
    run.validate(module, datamodule, verbose=False)
    acc = events(run.logger.log_dir)
    assert _decoded(acc, "xai/compare/pairs_pos").shape == (*ComparisonLayout(2, 1, 64).size, 3)
    assert "xai/compare/pairs_neg" not in acc.Tags()["images"]  # no e- maps, no e- comparison
    assert (tmp_path / "png" / "xai_compare_pairs_pos.png").is_file()

    quiet = ExplanationCallback(
        explainers=["gradcam"],
        metrics=FAST_METRICS,
        max_samples=2,
        log_comparison=False,
        log_curves=False,
        max_time_share=None,
    )
    run = trainer(tmp_path / "off", [quiet])
    run.validate(module, datamodule, verbose=False)
    tags = set(events(run.logger.log_dir).Tags()["images"])
    assert "xai/gradcam/pairs_pos" in tags
    assert not any("compare" in tag for tag in tags)

    only_compare = ExplanationCallback(
        explainers=["gradcam"],
        metrics=FAST_METRICS,
        max_samples=2,
        log_method_grids=False,
        log_curves=False,
        max_time_share=None,
    )
    run = trainer(tmp_path / "compare_only", [only_compare])
    run.validate(module, datamodule, verbose=False)
    assert set(events(run.logger.log_dir).Tags()["images"]) == {"xai/compare/pairs_pos", "xai/compare/pairs_neg"}


def test_writers_without_torch_internals_get_the_same_picture_through_add_image() -> None:
    """tensorboardX-like writers have no ``_get_file_writer``: the picture goes through add_image."""

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def add_image(self, tag: str, picture: np.ndarray, global_step: int, dataformats: str) -> None:
            self.calls.append((tag, picture, global_step, dataformats))

    picture = np.zeros((5, 7, 3), dtype=np.uint8)
    recorder = Recorder()
    add_picture(recorder, "xai/compare/pairs_pos", picture, 3)
    ((tag, logged, step, formats),) = recorder.calls
    assert (tag, step, formats) == ("xai/compare/pairs_pos", 3, "HWC")
    assert logged is picture
