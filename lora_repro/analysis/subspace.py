"""Normalized subspace similarity φ (Section 7.2 Eq. 4, Appendix G; Figures 3, 4, 6, 7, 8).

φ(A1, A2, i, j) = ||Q1[:, :i]^T Q2[:, :j]||_F² / min(i, j) ∈ [0, 1], where Q = the RIGHT singular vectors of the
r x k LoRA down-projection A (columns in R^k, the input space), largest singular value first. Appendix G prints
"left" and drops the numerator's superscript j; Section 7.2 (right singular vectors of A) is what is implemented.
φ does not depend on the signs or the order of ties the SVD picks, only on the spanned subspaces.
"""

from __future__ import annotations

from typing import Literal

import torch

from lora_repro.analysis.spectrum import as_float64_matrix, check_positive_int, default_rtol

Side = Literal["left", "right"]


def _check_index(value: object, name: str, upper: int, what: str) -> int:
    index = check_positive_int(value, name)
    if index > upper:
        raise ValueError(f"{name}={index} is out of range: valid is 1 <= {name} <= {upper} ({what})")
    return index


def _check_orthonormal(Q: torch.Tensor, name: str, dtype: torch.dtype) -> None:
    # sqrt(eps) of the stored dtype: loose enough for float32/bf16 bases from QR or SVD, tight enough to catch
    # a raw (non-orthonormalized) matrix, whose Gram matrix is off by O(1).
    atol = torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps ** 0.5
    gram_error = float((Q.T @ Q - torch.eye(Q.shape[1], dtype=Q.dtype)).abs().max())
    if gram_error > atol:
        raise ValueError(
            f"{name} (shape {tuple(Q.shape)}) does not have orthonormal columns: max |{name}^T {name} - I| = "
            f"{gram_error:.3g} > {atol:.3g}; pass singular vectors (e.g. from singular_directions) or a QR factor"
        )


def similarity_grid_of_bases(
    Q1: torch.Tensor, Q2: torch.Tensor, max_i: int | None = None, max_j: int | None = None
) -> torch.Tensor:
    """φ for every leading block of two orthonormal bases: grid[i-1, j-1] = ||Q1[:, :i]^T Q2[:, :j]||_F² / min(i, j).

    Q1 is n x p and Q2 is n x q, columns ordered by importance; max_i / max_j default to p / q. Returns a float64
    (max_i x max_j) tensor, from one product Q1^T Q2 and a 2-D cumulative sum of its squared entries.
    """
    dtypes = (Q1.dtype, Q2.dtype)
    Q1, Q2 = as_float64_matrix(Q1, "Q1"), as_float64_matrix(Q2, "Q2")
    if Q1.shape[0] != Q2.shape[0]:
        raise ValueError(
            f"Q1 is {tuple(Q1.shape)} and Q2 is {tuple(Q2.shape)}: both bases must live in the same space (same rows)"
        )
    _check_orthonormal(Q1, "Q1", dtypes[0])
    _check_orthonormal(Q2, "Q2", dtypes[1])
    max_i = Q1.shape[1] if max_i is None else _check_index(max_i, "max_i", Q1.shape[1], "columns of Q1")
    max_j = Q2.shape[1] if max_j is None else _check_index(max_j, "max_j", Q2.shape[1], "columns of Q2")
    squared_overlaps = (Q1[:, :max_i].T @ Q2[:, :max_j]) ** 2
    numerators = squared_overlaps.cumsum(dim=0).cumsum(dim=1)
    i = torch.arange(1, max_i + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, max_j + 1, dtype=torch.float64)[None, :]
    return numerators / torch.minimum(i, j)


def similarity_of_bases(Q1: torch.Tensor, Q2: torch.Tensor) -> float:
    """ψ(Q1, Q2) = ||Q1^T Q2||_F² / min(p, q) for orthonormal Q1 (n x p), Q2 (n x q) (Appendix G)."""
    return float(similarity_grid_of_bases(Q1, Q2)[-1, -1])


def singular_directions(matrix: torch.Tensor, side: Side = "right", n_directions: int | None = None) -> torch.Tensor:
    """Orthonormal singular vectors of `matrix` as columns, largest singular value first (float64).

    side="right" gives vectors in the input space (k x n, what Section 7.2 uses for A), side="left" gives vectors
    in the output space (d x n). n_directions defaults to min(shape). The paper does not say which side Figure 8
    (W_q vs ΔW_q) used, so compute both.
    """
    m64 = as_float64_matrix(matrix, "matrix")
    if side not in ("left", "right"):
        raise ValueError(f"side={side!r} is not valid; choose 'left' or 'right'")
    full = min(m64.shape)
    if n_directions is None:
        n = full
    else:
        n = _check_index(n_directions, "n_directions", full, f"min of shape {tuple(m64.shape)}")
    U, _, Vh = torch.linalg.svd(m64, full_matrices=False)
    return U[:, :n] if side == "left" else Vh[:n].T


def _right_basis_and_rank(A: torch.Tensor, name: str) -> tuple[torch.Tensor, int]:
    """Right singular vectors of A (k x rank) and A's numerical rank (matrix_rank convention)."""
    A64 = as_float64_matrix(A, name)
    _, S, Vh = torch.linalg.svd(A64, full_matrices=False)
    rank = int((S > default_rtol(A) * S[0]).sum()) if float(S[0]) > 0 else 0
    if rank == 0:
        raise ValueError(f"{name} (shape {tuple(A.shape)}) is all zeros: it has no singular directions")
    return Vh[:rank].T, rank


def subspace_similarity_grid(
    A1: torch.Tensor, A2: torch.Tensor, max_i: int | None = None, max_j: int | None = None
) -> torch.Tensor:
    """grid[i-1, j-1] = φ(A1, A2, i, j) for 1 <= i <= max_i, 1 <= j <= max_j (Figures 3, 4, 6, 7).

    A1 is r1 x k and A2 is r2 x k (LoRA A matrices of the same layer); max_i / max_j default to their numerical
    ranks (normally r1 / r2). One SVD per matrix; returns a float64 tensor.
    """
    basis1, rank1 = _right_basis_and_rank(A1, "A1")
    basis2, rank2 = _right_basis_and_rank(A2, "A2")
    if basis1.shape[0] != basis2.shape[0]:
        raise ValueError(
            f"A1 is {tuple(A1.shape)} and A2 is {tuple(A2.shape)}: they need the same number of columns k (input size)"
        )
    what = "numerical rank of {} with shape {}"
    max_i = rank1 if max_i is None else _check_index(max_i, "max_i", rank1, what.format("A1", tuple(A1.shape)))
    max_j = rank2 if max_j is None else _check_index(max_j, "max_j", rank2, what.format("A2", tuple(A2.shape)))
    return similarity_grid_of_bases(basis1, basis2, max_i, max_j)


def subspace_similarity(A1: torch.Tensor, A2: torch.Tensor, i: int, j: int) -> float:
    """φ(A1, A2, i, j) of Eq. 4: overlap of the top-i right singular directions of A1 with the top-j of A2."""
    basis1, rank1 = _right_basis_and_rank(A1, "A1")
    basis2, rank2 = _right_basis_and_rank(A2, "A2")
    if basis1.shape[0] != basis2.shape[0]:
        raise ValueError(
            f"A1 is {tuple(A1.shape)} and A2 is {tuple(A2.shape)}: they need the same number of columns k (input size)"
        )
    i = _check_index(i, "i", rank1, f"numerical rank of A1 with shape {tuple(A1.shape)}")
    j = _check_index(j, "j", rank2, f"numerical rank of A2 with shape {tuple(A2.shape)}")
    return similarity_of_bases(basis1[:, :i], basis2[:, :j])


def expected_random_similarity(k: int, i: int, j: int) -> float:
    """E[φ] for independent uniformly random i- and j-dimensional subspaces of R^k: max(i, j) / k.

    Why: for a uniform j-frame Q2, E[Q2 Q2^T] = (j / k) I, so E||Q1^T Q2||_F² = (j / k) tr(Q1^T Q1) = i j / k.
    """
    k = check_positive_int(k, "k")
    i = _check_index(i, "i", k, "dimension k of the ambient space")
    j = _check_index(j, "j", k, "dimension k of the ambient space")
    return max(i, j) / k


def random_subspace_similarity(
    shape_or_k: int | tuple[int, int], i: int, j: int, n_trials: int = 100, seed: int = 0
) -> torch.Tensor:
    """φ(G1, G2, i, j) for `n_trials` pairs of independent standard Gaussian matrices (the Figure 4 baseline).

    shape_or_k: the (r, k) shape of the random matrices (use the LoRA A shape), or just k, meaning (max(i, j), k).
    Returns the n_trials values as a float64 tensor; its mean estimates expected_random_similarity(k, i, j),
    since the right singular subspaces of a Gaussian matrix are uniformly distributed.
    """
    if isinstance(shape_or_k, tuple):
        if len(shape_or_k) != 2:
            raise ValueError(f"shape_or_k={shape_or_k!r} must be an int k or a 2-tuple (r, k)")
        rows, k = (check_positive_int(n, "shape_or_k entry") for n in shape_or_k)
    else:
        k = check_positive_int(shape_or_k, "shape_or_k")
        rows = max(check_positive_int(i, "i"), check_positive_int(j, "j"))
    n_trials = check_positive_int(n_trials, "n_trials")
    generator = torch.Generator().manual_seed(seed)
    values = [
        subspace_similarity(
            torch.randn(rows, k, generator=generator, dtype=torch.float64),
            torch.randn(rows, k, generator=generator, dtype=torch.float64),
            i,
            j,
        )
        for _ in range(n_trials)
    ]
    return torch.tensor(values, dtype=torch.float64)
