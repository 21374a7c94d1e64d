"""Numba kernels of fastntk (installed as ``fastntk.kernels``).

``codes``       the codes of the closed-form dual activations (shared with
                ``fastntk.network.activations``).
``series_cpu``  power-series algebra: truncated products, re-centred compositions, the
                ReLU-family series ODEs (docs/math.md section 3), and the Hermite projection
                of quadrature rows, rows in parallel (section 2).
``exact_cpu``   closed-form dual activations and the layer recursion written once
                (``first_layer``, ``layer_update``, ``exact_block``), carrying 1 - rho and
                1 + rho without cancellation (docs/math.md section 4).
``tiles_cpu``   the tile contract on the CPU: Gram blocks mapped by the exact recursion or
                Horner's rule, symmetric tiles, near-duplicate recomputation.
``tiles_cuda``  the same contract with numba.cuda (shared-memory Gram fused with the map,
                fused tile @ V; off the sphere the CPU's pair recursion and
                ``radial_cpu._radial_chunk`` as device functions); imported only when a GPU
                or the simulator is asked for.
``_cache``      where Numba caches them: falls back to a private temporary directory, or to
                no cache, with one warning, where the install and $HOME are read-only.
``sphere_cpu``  Funk-Hecke quadrature on the sphere: orthonormal Gegenbauer recurrence in
                double-double arithmetic with compensated sums (docs/math.md section 8).
``radial_cpu``  series activations for rows of any norm: Horner over per-row radial factors
                with a bound per entry, each row's degree its own (docs/math.md section
                11.1).
``gershgorin_cpu``  certified Gershgorin sums of Hadamard powers of the correlation matrix,
                tile by tile (the least-eigenvalue bound, docs/math.md section 7).
"""

from ._cache import KernelCacheWarning
from ._cache import configure as _configure_cache

__all__ = ["KernelCacheWarning"]

# Before any kernel module is imported: a read-only install (and $HOME) must not break the
# ``@njit(cache=True)`` decorators (see _cache.py and slurm/README.md, NUMBA_CACHE_DIR).
_configure_cache()
