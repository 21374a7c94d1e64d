"""fastntk: exact, certified Neural Tangent Kernels of deep fully-connected networks.

Built on the power-series expansion of Murray, Jin, Bowman and Montufar (ICLR 2023); the
mathematics is in docs/math.md, the design in docs/architecture.md.

Public API (this namespace)::

    NTK(activation, hidden_layers, ...)       the network: .coefficients(T), .ntk(rho),
                                              .kernel(X), .matrix(X) (lazy Dask, .to_zarr)
    top_eigenvalues(net, X, k)                top-k of K = Theta / n, matrix-free
    top_eigenvalues_stored(path, k)           top-k of a matrix stored by `fastntk matrix`
    smallest_eigenvalues(net, X, k)           bottom-k of K with a certified lower bound
    spectrum_study(net, X, k)                 the paper's study: eff(K), Theorems 3 and 5, ...
    sphere_eigenvalues(net, d, kmax)          Funk-Hecke eigenvalues on S^(d-1)
    empirical_ntk(net, X, width)              finite-width NTK for comparison
    get_client(...)                           a Dask client: local, scheduler, SLURM
    load_data(spec), uniform_sphere(n, d), digits(), table1()

Modules, in the order data flows through them:

    activations, hermite      activations phi and their Hermite coefficients (section 2)
    series, kernels.series_cpu   power-series algebra, compositions (section 3)
    ntk                       NTK: per-layer coefficient tables, exact values (sections 1, 3, 4)
    tilespec                  TileSpec: the tile contract in code (section 5)
    tiles, cpu, gpu           tile dispatch and its CPU / CUDA backends (kernels.tiles_cpu,
                              kernels.tiles_cuda, kernels.exact_cpu)
    blocks, tasks             block enumeration; tile tasks on threads or a Dask cluster
    matrix, store             lazy Dask kernel matrix; the resumable zarr store format
    operators, basis, solver  matrix-free operators; the block Krylov eigensolver
    eigen, theorems, study    NTK eigenvalue front ends; the paper's theorems; the study
    checkpoint                solver checkpoints (resume after a kill)
    smallest, lower_bound     the least eigenvalues; the certified Gershgorin lower bound
                              (section 7, kernels.gershgorin_cpu)
    sphere, kernels.sphere_cpu   eigenvalues on the sphere: Funk-Hecke quadrature and series
    sphere_sample, sphere_study  a sample's full spectrum; the sphere study (fits, pictures)
    decay                     decay models, decay classes of coefficient tables, fits
    plots                     figures
    paper                     the paper's Table 1 and Figures 1-3 (fastntk paper)
    empirical                 finite-width empirical NTK
    cluster                   Dask clients (LocalCluster, scheduler, SLURM)
    io, data                  the one data loader; row validation, built-in data sets
    cli, cli_args             the `fastntk` command and its shared arguments; cli_matrix,
                              cli_spectrum, cli_sphere, cli_paper: one command each
                              (formatting only)
    defaults                  named tolerances, caps and sizes
"""

from .activations import ACTIVATION_NAMES, Activation, activation_from_callable, get_activation
from .cluster import get_client
from .data import check_rows, digits, uniform_sphere
from .eigen import top_eigenvalues, top_eigenvalues_stored
from .empirical import empirical_ntk
from .hermite import HermiteCoefficients, hermite_for
from .io import load_data
from .ntk import NTK, Coefficients, LayerSeries
from .smallest import smallest_eigenvalues
from .solver import EigenResult
from .sphere import sphere_eigenvalues
from .study import SpectrumStudy, spectrum_study
from .tables import table1
from .tilespec import TileSpec, tile_spec

__all__ = [
    "ACTIVATION_NAMES", "Activation", "Coefficients", "EigenResult", "HermiteCoefficients",
    "LayerSeries", "NTK", "SpectrumStudy", "TileSpec", "activation_from_callable", "check_rows",
    "digits", "empirical_ntk", "get_activation", "get_client", "hermite_for", "load_data",
    "spectrum_study", "sphere_eigenvalues", "table1", "tile_spec", "top_eigenvalues",
    "top_eigenvalues_stored", "uniform_sphere", "smallest_eigenvalues",
]
__version__ = "0.1.0"
