import pytest
import torch

from ledit.ops.masks import SCANS, check_grid, scan_mask, visible_pairs

# Hand-computed masks on a 2x3 grid. Tokens (raster order):  0 1 2
#                                                            3 4 5
# Row = query, column = key, 1 = visible.
HAND_MASKS_2x3 = {
    "full": [[1] * 6] * 6,
    "raster": [[1 if k <= q else 0 for k in range(6)] for q in range(6)],
    "lower_right": [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 1, 0, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ],
    "neighborhood": [
        [1, 1, 0, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 1, 1],
        [1, 1, 0, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
    ],
    # corner: hide only keys strictly below AND strictly right of the query.
    "corner": [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],  # bottom row: nothing lies below it
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
    ],
}


@pytest.mark.parametrize("scan", SCANS)
def test_mask_matches_hand_computed_2x3(scan):
    expected = torch.tensor(HAND_MASKS_2x3[scan], dtype=torch.bool)
    assert torch.equal(scan_mask((2, 3), scan), expected)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("grid", [(1, 1), (3, 5), (5, 3), (4, 4)])
def test_every_token_sees_itself(scan, grid):
    assert scan_mask(grid, scan).diagonal().all()


def test_corner_visible_count_formula():
    # Corner's count in closed form: query (r, c) sees (r+1)*W + (H-1-r)*(c+1) keys.
    h, w = 4, 6
    mask = scan_mask((h, w), "corner")
    counts = mask.sum(1).reshape(h, w)
    for r in range(h):
        for c in range(w):
            assert counts[r, c] == (r + 1) * w + (h - 1 - r) * (c + 1)


def test_nested_masks():
    grid = (5, 7)
    lower_right, corner = scan_mask(grid, "lower_right"), scan_mask(grid, "corner")
    neighborhood, raster = scan_mask(grid, "neighborhood"), scan_mask(grid, "raster")
    assert (lower_right <= neighborhood).all() and (lower_right <= corner).all() and (lower_right <= raster).all()
    assert not torch.equal(lower_right, neighborhood)


@pytest.mark.parametrize("scan", SCANS)
def test_visible_pairs_counts_mask(scan):
    assert visible_pairs((5, 7), scan) == int(scan_mask((5, 7), scan).sum())


def test_bad_scan_and_grid_errors():
    with pytest.raises(ValueError, match="unknown scan='diagonal'.*corner"):
        scan_mask((2, 2), "diagonal")
    with pytest.raises(ValueError, match=r"grid=\(3, 3\) holds 9 tokens but the input has N=10"):
        check_grid((3, 3), 10)
    with pytest.raises(ValueError, match="positive ints"):
        check_grid((0, 3))
    with pytest.raises(ValueError, match="pair"):
        check_grid(16)
