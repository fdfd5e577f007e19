"""Tests for lora_repro.analysis on synthetic matrices whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lora_repro.analysis import (
    amplification,
    delta_w,
    effective_rank,
    expected_random_similarity,
    iter_lora_modules,
    numerical_rank,
    projection_norm,
    random_subspace_similarity,
    similarity_grid_of_bases,
    similarity_of_bases,
    singular_directions,
    spectrum,
    subspace_similarity,
    subspace_similarity_grid,
    top_singular_directions,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen(seed), dtype=torch.float64)


def orthonormal(n: int, m: int, seed: int) -> torch.Tensor:
    """n x m matrix with orthonormal columns."""
    return torch.linalg.qr(gaussian(n, m, seed)).Q


# ---------------------------------------------------------------- subspace similarity φ


def test_rotation_and_scaling_of_A_keep_phi_one_everywhere() -> None:
    A1 = gaussian(8, 64, seed=0)
    A2 = 3.7 * orthonormal(8, 8, seed=1) @ A1  # same singular vectors, singular values scaled
    grid = subspace_similarity_grid(A1, A2)
    assert grid.shape == (8, 8)
    torch.testing.assert_close(grid, torch.ones(8, 8, dtype=torch.float64), atol=1e-9, rtol=0)
    assert subspace_similarity(A1, A2, 3, 5) == pytest.approx(1.0, abs=1e-9)


def test_invertible_mixing_keeps_full_row_space_but_changes_top_directions() -> None:
    A1 = gaussian(8, 64, seed=2)
    R = orthonormal(8, 8, seed=3) @ torch.diag(torch.tensor([50.0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float64))
    A2 = R @ A1  # same row space, different singular directions
    grid = subspace_similarity_grid(A1, A2)
    torch.testing.assert_close(grid[:, -1], torch.ones(8, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(grid[-1, :], torch.ones(8, dtype=torch.float64), atol=1e-9, rtol=0)
    # A2's top direction is now A1's first row, not A1's top singular direction: φ must notice.
    assert grid[0, 0] < 0.9


def test_smaller_rank_subspace_inside_larger_one_gives_one() -> None:
    Q = orthonormal(256, 64, seed=4)
    A_r8 = gaussian(8, 8, seed=5) @ Q[:, :8].T
    A_r64 = gaussian(64, 64, seed=6) @ Q.T
    assert subspace_similarity(A_r8, A_r64, 8, 64) == pytest.approx(1.0, abs=1e-9)
    assert subspace_similarity(A_r8, A_r64, 3, 64) == pytest.approx(1.0, abs=1e-9)


def test_orthogonal_subspaces_give_zero() -> None:
    Q = orthonormal(32, 12, seed=7)
    A1 = gaussian(4, 4, seed=8) @ Q[:, :4].T
    A2 = gaussian(8, 8, seed=9) @ Q[:, 4:].T
    grid = subspace_similarity_grid(A1, A2)
    assert grid.shape == (4, 8)
    assert float(grid.abs().max()) < 1e-12
    assert similarity_of_bases(Q[:, :4], Q[:, 4:]) == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_grid_orders_directions_by_singular_value() -> None:
    e = torch.eye(6, dtype=torch.float64)
    # Rows deliberately not in singular-value order: the top direction of A1 is e0 (value 2), then e1 (value 1).
    A1 = torch.stack([1.0 * e[1], 2.0 * e[0]])
    A2 = torch.stack([3.0 * e[0], 2.0 * (e[1] + e[2]) / math.sqrt(2), 1.0 * e[3]])
    # Squared overlaps Q1^T Q2 = [[1, 0, 0], [0, 1/2, 0]]; φ(i, j) = cumulative sum / min(i, j).
    expected = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.75, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(subspace_similarity_grid(A1, A2), expected, atol=1e-12, rtol=0)
    assert subspace_similarity(A1, A2, 2, 2) == pytest.approx(0.75, abs=1e-12)


def test_uses_right_singular_vectors_like_numpy() -> None:
    A1, A2 = gaussian(5, 30, seed=10), gaussian(7, 30, seed=11)
    V1 = np.linalg.svd(A1.numpy())[2].T  # columns = right singular vectors in R^30
    V2 = np.linalg.svd(A2.numpy())[2].T
    for i, j in [(1, 1), (2, 5), (5, 7), (4, 3)]:
        expected = np.linalg.norm(V1[:, :i].T @ V2[:, :j]) ** 2 / min(i, j)
        assert subspace_similarity(A1, A2, i, j) == pytest.approx(expected, abs=1e-12)


def test_grid_equals_scalar_function() -> None:
    A1, A2 = gaussian(6, 40, seed=12), gaussian(10, 40, seed=13).to(torch.float32)
    grid = subspace_similarity_grid(A1, A2)
    assert grid.shape == (6, 10) and grid.dtype == torch.float64
    for i in range(1, 7):
        for j in range(1, 11):
            assert float(grid[i - 1, j - 1]) == pytest.approx(subspace_similarity(A1, A2, i, j), abs=1e-12)
    torch.testing.assert_close(subspace_similarity_grid(A1, A2, max_i=3, max_j=4), grid[:3, :4])


def test_phi_is_symmetric() -> None:
    A1, A2 = gaussian(8, 40, seed=14), gaussian(16, 40, seed=15)
    for i in range(1, 9):
        assert subspace_similarity(A1, A2, i, i) == pytest.approx(subspace_similarity(A2, A1, i, i), abs=1e-12)
    torch.testing.assert_close(subspace_similarity_grid(A1, A2), subspace_similarity_grid(A2, A1).T)
    values = subspace_similarity_grid(A1, A2)
    assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0 + 1e-12


@pytest.mark.parametrize(("i", "j"), [(1, 1), (2, 8), (8, 8), (6, 1)])
def test_random_subspaces_match_closed_form(i: int, j: int) -> None:
    k = 48
    samples = random_subspace_similarity(k, i, j, n_trials=300, seed=i * 100 + j)
    expected = expected_random_similarity(k, i, j)
    assert expected == max(i, j) / k
    standard_error = float(samples.std()) / math.sqrt(len(samples))
    assert abs(float(samples.mean()) - expected) < 4 * standard_error + 1e-12


def test_random_similarity_with_lora_shape_and_full_space() -> None:
    samples = random_subspace_similarity((8, 48), 2, 8, n_trials=300, seed=1)
    standard_error = float(samples.std()) / math.sqrt(300)
    assert abs(float(samples.mean()) - 8 / 48) < 4 * standard_error
    # A j = k subspace is the whole space, so φ is exactly 1 (and so is the closed form).
    torch.testing.assert_close(random_subspace_similarity(16, 3, 16, n_trials=5), torch.ones(5, dtype=torch.float64))
    assert expected_random_similarity(16, 3, 16) == 1.0
    # Same seed, same draws.
    first, again = random_subspace_similarity(20, 2, 3, 4, seed=9), random_subspace_similarity(20, 2, 3, 4, seed=9)
    torch.testing.assert_close(first, again)


def test_bad_indices_raise_clear_errors() -> None:
    A1, A2 = gaussian(8, 32, seed=16), gaussian(4, 32, seed=17)
    with pytest.raises(ValueError, match=r"i=0 is out of range: it must be >= 1"):
        subspace_similarity(A1, A2, 0, 1)
    with pytest.raises(ValueError, match=r"i=9 is out of range: valid is 1 <= i <= 8 \(numerical rank of A1"):
        subspace_similarity(A1, A2, 9, 1)
    with pytest.raises(ValueError, match=r"j=5 is out of range: valid is 1 <= j <= 4"):
        subspace_similarity(A1, A2, 1, 5)
    with pytest.raises(TypeError, match=r"i must be an integer"):
        subspace_similarity(A1, A2, 2.0, 1)
    with pytest.raises(ValueError, match=r"max_j=5 is out of range"):
        subspace_similarity_grid(A1, A2, max_j=5)
    rank3 = gaussian(8, 3, seed=18) @ gaussian(3, 32, seed=19)
    with pytest.raises(ValueError, match=r"i=4 is out of range: valid is 1 <= i <= 3"):
        subspace_similarity(rank3, A2, 4, 1)
    with pytest.raises(ValueError, match=r"same number of columns"):
        subspace_similarity(A1, gaussian(4, 31, seed=20), 1, 1)
    with pytest.raises(ValueError, match=r"must be a 2-D matrix"):
        subspace_similarity(A1[0], A2, 1, 1)
    with pytest.raises(ValueError, match=r"all zeros"):
        subspace_similarity(torch.zeros(4, 32), A2, 1, 1)
    with pytest.raises(ValueError, match=r"i=40 is out of range: valid is 1 <= i <= 32"):
        expected_random_similarity(32, 40, 1)


# ---------------------------------------------------------------- bases and singular directions (Figure 8)


def test_similarity_of_bases_hand_value_and_orthonormality_check() -> None:
    e = torch.eye(5, dtype=torch.float64)
    Q1 = torch.stack([e[0], e[1]], dim=1)
    Q2 = torch.stack([e[0], (e[1] + e[2]) / math.sqrt(2), e[3]], dim=1)
    assert similarity_of_bases(Q1, Q2) == pytest.approx((1 + 0.5) / 2, abs=1e-12)
    with pytest.raises(ValueError, match=r"Q2 .* does not have orthonormal columns"):
        similarity_of_bases(Q1, 2 * Q2)
    with pytest.raises(ValueError, match=r"same space"):
        similarity_of_bases(Q1, torch.eye(4, 2, dtype=torch.float64))


def constructed_w_and_delta() -> dict[str, object]:
    """W = U diag(s) V^T (12 x 10) and a rank-2 ΔW along hand-picked combinations of W's singular vectors."""
    d, k = 12, 10
    U, V = orthonormal(d, d, seed=21), orthonormal(k, k, seed=22)
    s = torch.tensor([10.0, 8, 6, 5, 4, 3, 2.5, 2, 1, 0.5], dtype=torch.float64)
    W = U[:, :k] @ torch.diag(s) @ V.T
    x1, y1 = (U[:, 0] + U[:, 3]) / math.sqrt(2), (V[:, 0] + V[:, 3]) / math.sqrt(2)
    x2, y2 = U[:, 7], (V[:, 7] + V[:, 8]) / math.sqrt(2)
    dW = 5.0 * torch.outer(x1, y1) + 2.0 * torch.outer(x2, y2)
    return {"W": W, "dW": dW, "U": U, "V": V, "s": s}


def test_singular_directions_left_right_and_figure8_grid() -> None:
    c = constructed_w_and_delta()
    W, dW, U, V = c["W"], c["dW"], c["U"], c["V"]
    right, left = singular_directions(W, "right", 3), singular_directions(W, side="left", n_directions=3)
    assert right.shape == (10, 3) and left.shape == (12, 3)
    assert similarity_of_bases(right, V[:, :3]) == pytest.approx(1.0, abs=1e-9)
    assert similarity_of_bases(left, U[:, :3]) == pytest.approx(1.0, abs=1e-9)
    # ΔW's right directions: y1 = (v0 + v3)/√2, y2 = (v7 + v8)/√2 against W's top-j right directions v0..v_{j-1}.
    grid = similarity_grid_of_bases(singular_directions(dW, "right", 2), singular_directions(W, "right"))
    assert grid[0, 0] == pytest.approx(0.5, abs=1e-9)  # y1 · v0 squared
    assert grid[0, 3] == pytest.approx(1.0, abs=1e-9)  # y1 lies in span(v0..v3)
    assert grid[1, 4] == pytest.approx(0.5, abs=1e-9)  # (1 + 0) / 2
    assert grid[1, 8] == pytest.approx(1.0, abs=1e-9)  # (1 + 1) / 2
    with pytest.raises(ValueError, match=r"side='middle' is not valid; choose 'left' or 'right'"):
        singular_directions(W, "middle")  # type: ignore[arg-type]


# ---------------------------------------------------------------- Table 7 / amplification


def test_amplification_matches_hand_computation() -> None:
    c = constructed_w_and_delta()
    W, dW, s = c["W"], c["dW"], c["s"]
    result = amplification(W, dW, r=2, seed=0)
    # U^T W V = [[x1ᵀ W y1, x1ᵀ W y2], [x2ᵀ W y1, x2ᵀ W y2]] = [[(s0 + s3)/2, 0], [0, s7/√2]].
    expected_projection = math.sqrt(((10.0 + 5.0) / 2) ** 2 + (2.0 / math.sqrt(2)) ** 2)
    assert result["proj_delta_w"] == pytest.approx(expected_projection, rel=1e-10)
    assert result["delta_w_fro"] == pytest.approx(math.sqrt(5.0**2 + 2.0**2), rel=1e-10)
    assert result["w_fro"] == pytest.approx(float(s.norm()), rel=1e-10)
    assert result["proj_w"] == pytest.approx(math.sqrt(10.0**2 + 8.0**2), rel=1e-10)
    assert result["amplification"] == pytest.approx(math.sqrt(29.0) / expected_projection, rel=1e-10)
    assert result["r"] == 2 and result["delta_w_rank"] == 2
    assert amplification(W, dW, r=1)["proj_delta_w"] == pytest.approx(7.5, rel=1e-10)


def test_random_projection_is_seeded_and_has_the_right_expectation() -> None:
    c = constructed_w_and_delta()
    W, dW = c["W"], c["dW"]
    assert amplification(W, dW, 2, seed=3)["proj_random"] == amplification(W, dW, 2, seed=3)["proj_random"]
    assert amplification(W, dW, 2, seed=3)["proj_random"] != amplification(W, dW, 2, seed=4)["proj_random"]
    # For independent uniform r-frames U (d x r), V (k x r): E||Uᵀ W V||_F² = (r/d)(r/k)||W||_F².
    squares = torch.tensor([amplification(W, dW, 2, seed=seed)["proj_random"] ** 2 for seed in range(300)])
    expected = 2 * 2 * float(W.norm()) ** 2 / (12 * 10)
    assert abs(float(squares.mean()) - expected) < 4 * float(squares.std()) / math.sqrt(300)


def test_amplification_and_projection_input_errors() -> None:
    c = constructed_w_and_delta()
    W, dW = c["W"], c["dW"]
    with pytest.warns(UserWarning, match=r"r=3 exceeds the numerical rank 2 of delta_w"):
        amplification(W, dW, r=3)
    with pytest.raises(ValueError, match=r"same shape"):
        amplification(W, dW[:, :9], r=1)
    with pytest.raises(ValueError, match=r"r=0 is out of range"):
        amplification(W, dW, r=0)
    with pytest.raises(ValueError, match=r"shapes do not fit"):
        projection_norm(W, torch.eye(10, 2, dtype=torch.float64), torch.eye(10, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"r=11 is out of range: valid is 1 <= r <= 10"):
        top_singular_directions(W, 11)


def test_top_singular_directions_reconstruct_low_rank_matrix() -> None:
    M = gaussian(9, 3, seed=23) @ gaussian(3, 7, seed=24)
    U, S, V = top_singular_directions(M, 3)
    assert U.shape == (9, 3) and S.shape == (3,) and V.shape == (7, 3)
    torch.testing.assert_close(U @ torch.diag(S) @ V.T, M)
    assert projection_norm(M, U, V) == pytest.approx(float(S.norm()), rel=1e-10)


# ---------------------------------------------------------------- ΔW, spectrum, rank


def test_delta_w_is_scaled_product() -> None:
    A, B = gaussian(4, 16, seed=25).float(), gaussian(8, 4, seed=26).float()
    dW = delta_w(A, B, scaling=2.0)
    assert dW.shape == (8, 16) and dW.dtype == torch.float64
    torch.testing.assert_close(dW, 2.0 * B.double() @ A.double())
    assert numerical_rank(dW) == 4
    with pytest.raises(ValueError, match=r"LoRA shapes do not match"):
        delta_w(A, B.T, 1.0)


def test_spectrum_and_effective_rank() -> None:
    expected_values = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(spectrum(torch.diag(torch.tensor([1.0, 3.0, 2.0]))), expected_values)
    assert effective_rank(torch.diag(torch.tensor([3.0, 3.0, 3.0, 0.0]))) == pytest.approx(3.0, rel=1e-12)
    assert numerical_rank(torch.diag(torch.tensor([3.0, 3.0, 3.0, 0.0]))) == 3
    p = torch.tensor([2 / 3, 1 / 3])
    assert effective_rank(torch.tensor([2.0, 1.0])) == pytest.approx(math.exp(-float((p * p.log()).sum())), rel=1e-6)
    rank1 = torch.outer(torch.arange(1.0, 6.0), torch.arange(1.0, 5.0))
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-9)
    assert numerical_rank(torch.tensor([1.0, 1e-3, 1e-8]), rtol=1e-5) == 2
    assert numerical_rank(torch.zeros(3, 3)) == 0
    with pytest.raises(ValueError, match=r"all-zero"):
        effective_rank(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r">= 0"):
        numerical_rank(torch.tensor([1.0, -1.0]))


def test_numerical_rank_tolerance_follows_input_precision() -> None:
    low_rank = (gaussian(40, 3, seed=27) @ gaussian(3, 40, seed=28)).float()  # float32 rounding noise ~1e-7
    assert numerical_rank(low_rank) == 3
    # The same noise is far above a float64 tolerance, which is why the input dtype sets the default.
    assert numerical_rank(low_rank, rtol=40 * torch.finfo(torch.float64).eps) > 3


# ---------------------------------------------------------------- state dicts


def test_iter_lora_modules_pairs_keys_in_order() -> None:
    state = {
        "enc.0.q.weight": torch.zeros(8, 16),
        "enc.0.q.lora_A": gaussian(4, 16, seed=29),
        "enc.0.q.lora_B": gaussian(8, 4, seed=30),
        "enc.0.v.lora_B": gaussian(8, 2, seed=31),
        "enc.0.v.lora_A": gaussian(2, 16, seed=32),
        "enc.0.xlora_A": torch.zeros(1),  # not a dotted "lora_A" component: ignored
    }
    modules = list(iter_lora_modules(state))
    assert [m.name for m in modules] == ["enc.0.q", "enc.0.v"]
    name, A, B = modules[1]
    assert A is state["enc.0.v.lora_A"] and B is state["enc.0.v.lora_B"]
    assert subspace_similarity_grid(modules[0].A, modules[1].A).shape == (4, 2)

    peft_style = {
        "m.lora_A.default.weight": gaussian(2, 5, seed=33),
        "m.lora_B.default.weight": gaussian(3, 2, seed=34),
    }
    found = list(iter_lora_modules(peft_style, "lora_A.default.weight", "lora_B.default.weight"))
    assert [m.name for m in found] == ["m"]


def test_iter_lora_modules_rejects_broken_state_dicts() -> None:
    with pytest.raises(ValueError, match=r"'a.q' has no lora_B"):
        iter_lora_modules({"a.q.lora_A": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"'a.q' has no lora_A"):
        iter_lora_modules({"a.q.lora_B": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match=r"rank mismatch in 'a.q'"):
        iter_lora_modules({"a.q.lora_A": torch.zeros(2, 4), "a.q.lora_B": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match=r"'a.q.lora_A' must be a 2-D tensor"):
        iter_lora_modules({"a.q.lora_A": torch.zeros(8), "a.q.lora_B": torch.zeros(4, 2)})
