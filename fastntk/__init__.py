"""fastntk: exact, certified Neural Tangent Kernels of deep fully-connected networks.

Built on the power-series expansion of Murray, Jin, Bowman and Montufar (ICLR 2023); the
mathematics is in docs/math.md, the design in docs/architecture.md.

Public API (this namespace)::

    NTK(activation, hidden_layers, ...)       the network: .coefficients(T), .ntk(rho),
                                              .kernel(X), .matrix(X) (lazy Dask, .to_zarr),
                                              .diagonal(X) (rows of any norm, as given)
    top_eigenvalues(net, X, k)                top-k of K = Theta / n, matrix-free
    top_eigenvalues_stored(path, k)           top-k of a matrix stored by `fastntk matrix`
    smallest_eigenvalues(net, X, k)           bottom-k of K with a certified lower bound
    spectrum_study(net, X, k)                 the paper's study: eff(K), Theorems 3 and 5, ...
    sphere_eigenvalues(net, d, kmax)          Funk-Hecke eigenvalues on S^(d-1)
    empirical_ntk(net, X, width)              finite-width NTK for comparison
    predict(net, X, y, X_test, t, ridge)      training dynamics and kernel regression
                                              (Prediction: train/test f_t and losses)
    label_spectrum(net, X, y, eig)            label power, C(k), alignment, loss band
    get_client(...)                           a Dask client: local, scheduler, SLURM
    load_data(spec), load_labels(spec), uniform_sphere(n, d), digits(), digits_labels(),
    table1()

Subpackages, one per pipeline stage, in the order data flows through them; a module imports
only its own stage and earlier ones (tests/test_layout.py):

    common     defaults (named tolerances, caps, sizes), threads (BLAS limits, Numba
               parallel sections, task threads), checks (counts, output folders)
    kernels    the Numba kernels (CPU and CUDA), installed from the top-level kernels/
    data       rows (row checks, on_sphere, zero rows), builtin (digits, the sphere), loader
               (the one data loader)
    network    activations, hermite (section 2), series (section 3), ntk (the NTK and its
               coefficient tables, sections 1, 3, 4), tables (the paper's Table 1)
    tiles      spec (TileSpec: the tile contract, section 5), economized (shorter series
               tables per r-bucket), dispatch, cpu, radial (series activations off the
               sphere, section 11.1), gpu
    scale      blocks, tasks (threads or a Dask cluster), matrix (lazy Dask kernel matrix),
               store (resumable zarr stores), cluster (Dask clients: local, scheduler, SLURM)
    spectrum   operators, basis, solver (block Krylov), checkpoint, eigen (top-k),
               smallest, lower_bound (section 7), theorems (the paper's Theorems 3 and 5)
    sphere     funk_hecke (eigenvalues on the sphere, section 8), sample (a sample's spectrum)
    analysis   decay (decay laws and fits, section 9), empirical (finite-width NTK),
               spectrum_study, sphere_study, plots, paper (Table 1, Figures 1-3),
               benchmark (hardware figures of `fastntk bench`)
    learning   dynamics (gradient flow and kernel regression: dense, block Krylov, CG;
               section 10), alignment (label power, C(k), alignment, the loss band),
               predict (fastntk.predict, Prediction), training (finite-width networks by
               gradient descent), plots
    cli        app (the `fastntk` command), args (shared options), and one module per
               command: matrix, spectrum, sphere, paper, predict, bench (formatting only)
"""

from .analysis.empirical import empirical_ntk
from .analysis.spectrum_study import SpectrumStudy, spectrum_study
from .data import check_rows, digits, digits_labels, load_data, load_labels, uniform_sphere
from .learning import LabelSpectrum, Prediction, SingularKernelError, label_spectrum, predict
from .network.activations import (
    ACTIVATION_NAMES,
    Activation,
    activation_from_callable,
    get_activation,
)
from .network.hermite import HermiteCoefficients, hermite_for
from .network.ntk import NTK, Coefficients, LayerSeries
from .network.tables import table1
from .scale.cluster import get_client
from .spectrum.eigen import top_eigenvalues, top_eigenvalues_stored
from .spectrum.smallest import smallest_eigenvalues
from .spectrum.solver import EigenResult
from .sphere.funk_hecke import sphere_eigenvalues
from .tiles.radial import clear_tables as clear_radial_tables
from .tiles.spec import TileSpec, tile_spec

__all__ = [
    "ACTIVATION_NAMES", "Activation", "Coefficients", "EigenResult", "HermiteCoefficients",
    "LabelSpectrum", "LayerSeries", "NTK", "Prediction", "SingularKernelError", "SpectrumStudy",
    "TileSpec", "activation_from_callable", "check_rows", "clear_radial_tables", "digits",
    "digits_labels",
    "empirical_ntk", "get_activation", "get_client", "hermite_for", "label_spectrum",
    "load_data", "load_labels", "predict",
    "spectrum_study", "sphere_eigenvalues", "table1", "tile_spec", "top_eigenvalues",
    "top_eigenvalues_stored", "uniform_sphere", "smallest_eigenvalues",
]
__version__ = "0.1.0"
