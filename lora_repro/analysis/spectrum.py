"""Spectra of LoRA updates and the Table 7 / Appendix H.4 projection analysis.

Every decomposition runs in float64: the quantities compared in the paper (e.g. ||U^T W V||_F = 0.02 against
||W||_F = 61.95) span several orders of magnitude, and float32/bf16 SVDs blur the small ones.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import NamedTuple

import torch


def as_float64_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    """Detached float64 copy of a 2-D tensor; a clear error for anything else."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x.detach().to(torch.float64)


def _dtype_eps(dtype: torch.dtype) -> float:
    # The tolerance must reflect the precision the data was stored in, not the float64 we compute in:
    # a rank-deficient float32 matrix has noise singular values near 1e-7 * sigma_max, far above float64 eps.
    return torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps


def default_rtol(x: torch.Tensor) -> float:
    """NumPy/torch matrix_rank convention: max(shape) * eps(dtype of the data as given)."""
    return max(x.shape) * _dtype_eps(x.dtype)


def check_positive_int(value: object, name: str) -> int:
    """`value` as an int >= 1 (bools and floats are rejected rather than silently truncated)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if as_int < 1:
        raise ValueError(f"{name}={as_int} is out of range: it must be >= 1")
    return as_int


def delta_w(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """The LoRA update ΔW = scaling * B @ A in float64 (A: r x in, B: out x r, scaling = alpha / r)."""
    A64, B64 = as_float64_matrix(A, "A"), as_float64_matrix(B, "B")
    if B64.shape[1] != A64.shape[0]:
        raise ValueError(
            f"LoRA shapes do not match: A is {tuple(A.shape)} (r x in) and B is {tuple(B.shape)} (out x r); "
            f"need B.shape[1] == A.shape[0]"
        )
    return float(scaling) * (B64 @ A64)


def spectrum(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of `matrix` in float64, largest first (length min(shape))."""
    return torch.linalg.svdvals(as_float64_matrix(matrix, "matrix"))


def _singular_values(matrix_or_values: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Singular values (descending, float64) and the default relative tolerance for them."""
    if not isinstance(matrix_or_values, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(matrix_or_values).__name__}")
    if matrix_or_values.ndim == 2:
        return spectrum(matrix_or_values), default_rtol(matrix_or_values)
    if matrix_or_values.ndim == 1:
        values = matrix_or_values.detach().to(torch.float64)
        if values.numel() == 0:
            raise ValueError("singular values are empty")
        if bool((values < 0).any()):
            raise ValueError("singular values must be >= 0; pass the matrix itself if these are eigenvalues")
        return torch.sort(values, descending=True).values, len(values) * _dtype_eps(matrix_or_values.dtype)
    raise ValueError(
        f"expected a 2-D matrix or a 1-D tensor of singular values, got shape {tuple(matrix_or_values.shape)}"
    )


def numerical_rank(matrix_or_values: torch.Tensor, rtol: float | None = None) -> int:
    """Number of singular values > rtol * largest one.

    Accepts a matrix or its singular values. Default rtol = max(shape) * eps of the input dtype
    (len(values) * eps for a 1-D input), the torch/NumPy matrix_rank convention.
    """
    values, default = _singular_values(matrix_or_values)
    tol = default if rtol is None else float(rtol)
    if tol < 0:
        raise ValueError(f"rtol={rtol} must be >= 0")
    if float(values[0]) == 0.0:
        return 0
    return int((values > tol * values[0]).sum())


def effective_rank(matrix_or_values: torch.Tensor) -> float:
    """Entropy effective rank (Roy & Vetterli 2007): exp(H(p)) with p_k = σ_k / Σσ, in [1, min(shape)]."""
    values, _ = _singular_values(matrix_or_values)
    total = values.sum()
    if float(total) == 0.0:
        raise ValueError("effective rank is undefined for an all-zero matrix (every singular value is 0)")
    p = values / total
    p = p[p > 0]  # 0 * log 0 = 0 by convention
    return float(torch.exp(-(p * torch.log(p)).sum()))


class SingularDirections(NamedTuple):
    """Top-r part of M = U diag(S) V^T: U is d x r (left), S has r values, V is k x r (right)."""

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor


def top_singular_directions(matrix: torch.Tensor, r: int) -> SingularDirections:
    """Top-r left/right singular vectors and values of `matrix` (float64, largest singular value first)."""
    m64 = as_float64_matrix(matrix, "matrix")
    r = check_positive_int(r, "r")
    if r > min(m64.shape):
        raise ValueError(f"r={r} is out of range: valid is 1 <= r <= {min(m64.shape)} for shape {tuple(m64.shape)}")
    U, S, Vh = torch.linalg.svd(m64, full_matrices=False)
    return SingularDirections(U[:, :r], S[:r], Vh[:r].T)


def projection_norm(W: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> float:
    """||U^T W V||_F with U (d x r) left and V (k x r) right directions, W (d x k): Table 7's ||U^T W_q V^T||_F."""
    W64, U64, V64 = as_float64_matrix(W, "W"), as_float64_matrix(U, "U"), as_float64_matrix(V, "V")
    if U64.shape[0] != W64.shape[0] or V64.shape[0] != W64.shape[1]:
        raise ValueError(
            f"shapes do not fit U^T W V: W is {tuple(W.shape)} (d x k), U is {tuple(U.shape)} (need d x r), "
            f"V is {tuple(V.shape)} (need k x r)"
        )
    return float(torch.linalg.matrix_norm(U64.T @ W64 @ V64))


def amplification(W: torch.Tensor, delta_w: torch.Tensor, r: int, seed: int = 0) -> dict[str, float]:
    """Table 7 and Appendix H.4 for one weight matrix.

    Returns (all floats except `r`, `delta_w_rank`):
      w_fro            ||W||_F
      delta_w_fro      ||ΔW||_F
      proj_delta_w     ||U^T W V||_F, U, V = top-r singular directions of ΔW   (Table 7 "ΔW_q" column)
      proj_w           same with U, V from W itself = sqrt(σ_1² + … + σ_r²) of W  (Table 7 "W_q" column)
      proj_random      same with U, V from a Gaussian matrix of W's shape, drawn with `seed` (Table 7 "Random")
      amplification    ||ΔW||_F / proj_delta_w (H.4; the paper's 21.5 at r=4, about 2 at r=64)
      r, delta_w_rank  the requested r and ΔW's numerical rank (a warning is raised when r exceeds it,
                       because the extra directions of ΔW are then arbitrary null-space vectors)
    """
    W64, dW64 = as_float64_matrix(W, "W"), as_float64_matrix(delta_w, "delta_w")
    if W64.shape != dW64.shape:
        raise ValueError(f"W is {tuple(W.shape)} but delta_w is {tuple(delta_w.shape)}; they must have the same shape")
    r = check_positive_int(r, "r")
    delta_w_rank = numerical_rank(delta_w)
    if r > delta_w_rank:
        warnings.warn(
            f"r={r} exceeds the numerical rank {delta_w_rank} of delta_w; its extra singular directions are arbitrary",
            stacklevel=2,
        )
    from_delta = top_singular_directions(dW64, r)
    from_w = top_singular_directions(W64, r)
    generator = torch.Generator().manual_seed(seed)
    random_matrix = torch.randn(W64.shape, generator=generator, dtype=torch.float64)
    from_random = top_singular_directions(random_matrix, r)

    proj_delta_w = projection_norm(W64, from_delta.U, from_delta.V)
    delta_w_fro = float(torch.linalg.matrix_norm(dW64))
    return {
        "r": r,
        "delta_w_rank": delta_w_rank,
        "w_fro": float(torch.linalg.matrix_norm(W64)),
        "delta_w_fro": delta_w_fro,
        "proj_delta_w": proj_delta_w,
        "proj_w": projection_norm(W64, from_w.U, from_w.V),
        "proj_random": projection_norm(W64, from_random.U, from_random.V),
        "amplification": delta_w_fro / proj_delta_w if proj_delta_w > 0 else math.inf,
    }
