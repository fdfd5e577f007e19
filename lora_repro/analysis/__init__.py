"""Section 7 of the LoRA paper as plain functions over tensors: subspace similarity φ, ΔW spectra, Table 7."""

from lora_repro.analysis.checkpoint import LoraModule, iter_lora_modules
from lora_repro.analysis.spectrum import (
    SingularDirections,
    amplification,
    delta_w,
    effective_rank,
    numerical_rank,
    projection_norm,
    spectrum,
    top_singular_directions,
)
from lora_repro.analysis.subspace import (
    expected_random_similarity,
    random_subspace_similarity,
    similarity_grid_of_bases,
    similarity_of_bases,
    singular_directions,
    subspace_similarity,
    subspace_similarity_grid,
)

__all__ = [
    "LoraModule",
    "SingularDirections",
    "amplification",
    "delta_w",
    "effective_rank",
    "expected_random_similarity",
    "iter_lora_modules",
    "numerical_rank",
    "projection_norm",
    "random_subspace_similarity",
    "similarity_grid_of_bases",
    "similarity_of_bases",
    "singular_directions",
    "spectrum",
    "subspace_similarity",
    "subspace_similarity_grid",
    "top_singular_directions",
]
