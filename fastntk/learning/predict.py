"""``fastntk.predict``: what an infinitely wide network trained by gradient flow predicts
(docs/math.md section 10), with a typed result, :class:`Prediction`.

Conventions: K = Theta(X, X) / n, K(x, X) = Theta(x, X) / n; gradient flow
df/dt = -K (f - y) (learning rate folded into t; with a ridge, -K (f - y) - ridge f) from
f_0 = 0, the mean of the infinite ensemble; then

    f_t(X) = y - h_t(K) y,     f_t(x) = K(x, X) g_t(K) y,     (dynamics.py)

with g_t(w) = (1 - e^{-t (w + ridge)}) / (w + ridge) and h_t = 1 - w g_t, so that t = inf
with a ridge is kernel ridge regression K(x, X) (K + ridge I)^{-1} y.

Paths: n <= ``DENSE_MAX`` (20,000) in this process: K assembled through the tiles, then block
Krylov on it for the finite times (tried within a budget of passes), else one eigh serving
every t, and one Cholesky for t = inf (``dynamics.dense_parts``).  Beyond, or on a Dask cluster:
matrix-free passes over the tiles (``fastntk.spectrum.operators.kernel_operator``), block
Krylov for the finite t and conjugate gradients preconditioned by the top-k eigenpairs
(``fastntk.top_eigenvalues``) for t = inf.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..common.checks import check_count, output_folder
from ..common.defaults import PREDICT_TOL, TILE_TOL
from ..data.loader import check_labels
from ..data.rows import check_rows
from ..spectrum.eigen import assemble_kernel, top_eigenvalues
from ..spectrum.lower_bound import least_eigenvalue_bound
from ..spectrum.operators import kernel_operator
from ..spectrum.smallest import DENSE_MAX
from ..spectrum.theorems import diagonal_scale, rows_on_sphere
from ..tiles.dispatch import theta_tile_matvec, tile_spec
from ..tiles.spec import check_which
from .dynamics import (
    SINGULAR_MARGIN,
    Dynamics,
    SingularKernelError,
    check_ridge,
    check_times,
    dense_parts,
    krylov_dynamics,
    ridge_cg,
    singular_message,
    whole_steps,
)

__all__ = ["PREDICT_TOL", "Prediction", "predict"]

_EPS = float(np.finfo(np.float64).eps)
#: Passes the matrix-free path may take for the finite times, and for CG.
PREDICT_MAX_PASSES = 300
#: Relative eigenvalue accuracy of the top-k eigenpairs that precondition CG (a
#: preconditioner needs no more: CG's own residual decides the accuracy).
PRECONDITIONER_TOL = 1e-6
#: At most this many passes for those eigenpairs: unconverged Ritz pairs still make an
#: SPD preconditioner (measured, n = 4,000 on S^63, top-82: 20 passes to converge at 1e-6).
PRECONDITIONER_PASSES = 6
SOLVERS = ("auto", "dense", "krylov")


@dataclass
class Prediction:
    """The predictions and losses of :func:`predict` (docs/math.md section 10).

    Shapes: with a sequence of times, every array has a leading time axis (T); the label
    axis follows y: ``train`` (T, n) or (T, n, o), ``test`` (T, m) or (T, m, o); with one
    time (a number or None) there is no time axis.  ``*_error``: an estimated bound on the
    Frobenius-norm error of the matching prediction (per t), and on the absolute error of
    each loss.  Losses are 1/2 the mean over all entries of (f_t - y)^2.  ``alpha``: the
    coefficients g_t(K) y (shaped like ``train``) with f_t(x) = K(x, X) alpha, when they
    were computed (with test points, or at t = inf on the matrix-free path)."""

    times: np.ndarray
    train: np.ndarray
    train_error: np.ndarray
    train_loss: np.ndarray
    train_loss_error: np.ndarray
    test: np.ndarray | None = None
    test_error: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_loss_error: np.ndarray | None = None
    ridge: float = 0.0
    which: str = "ntk"
    step: float | None = None
    n: int = 0
    outputs: int = 1
    m: int = 0
    method: str = ""
    passes: int = 0
    converged: bool = True
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    empirical: dict | None = None
    alpha: np.ndarray | None = None

    def to_dict(self) -> dict:
        """A JSON-able summary: times (inf as the string "inf"), losses with their errors,
        prediction errors and how they were computed (no prediction arrays)."""
        def arr(v):
            if v is None:
                return None
            return np.atleast_1d(np.asarray(v, dtype=float)).tolist()

        kernel = ("K = Theta(X, X) / n" if self.which == "ntk" else
                  "K = Sigma(X, X) / n (the NNGP kernel: at t = inf the GP posterior mean; "
                  "at finite t gradient flow of the last layer alone)")
        out = {"convention": f"{kernel}; df/dt = -K (f - y) (- ridge f), f_0 = 0; "
                             "loss = mean (f - y)^2 / 2 (docs/math.md section 10)",
               "times": [t if math.isfinite(t) else "inf" for t in np.atleast_1d(self.times)],
               "ridge": self.ridge, "which": self.which, "step": self.step, "n": self.n,
               "outputs": self.outputs, "test_points": self.m,
               "train_loss": arr(self.train_loss), "train_loss_error": arr(self.train_loss_error),
               "train_error": arr(self.train_error),
               "test_loss": arr(self.test_loss), "test_loss_error": arr(self.test_loss_error),
               "test_error": arr(self.test_error), "method": self.method,
               "passes": self.passes, "converged": self.converged, "seconds": self.seconds,
               "info": self.info}
        if self.empirical is not None:
            out["empirical"] = self.empirical
        return out

    def write(self, folder: str, title: str = "", extra: dict | None = None) -> dict:
        """Write ``predict.json`` and ``predict.png`` into ``folder``; returns the paths.
        ``extra``: entries added to the top level of ``predict.json`` (e.g. the data, labels,
        network and rows record of ``fastntk predict``)."""
        from .plots import plot_prediction

        output_folder(folder)
        summary = {**self.to_dict(), **(extra or {})}
        files = {"json": os.path.join(folder, "predict.json")}
        plot_data = dict(summary, times=[math.inf if t == "inf" else t
                                         for t in summary["times"]])
        files["plot"] = plot_prediction(plot_data, os.path.join(folder, "predict.png"), title)
        summary["files"] = files
        with open(files["json"], "w") as fh:
            json.dump(summary, fh, indent=1)
        return files


def predict(net, X_train, y_train, X_test=None, t=None, ridge: float = 0.0, *,
            y_test=None, which: str = "ntk", solver: str = "auto", client=None,
            step: float | None = None, tol: float = PREDICT_TOL, rank: int | None = None,
            max_passes: int = PREDICT_MAX_PASSES, method: str = "auto",
            tile_tol: float = TILE_TOL, device: str = "cpu", normalize: bool = False,
            progress: bool = False, checkpoint=None) -> Prediction:
    """Predictions of the infinitely wide network ``net`` (an :class:`~fastntk.NTK`) trained
    on (``X_train``, ``y_train``) by gradient flow from f_0 = 0, at times ``t``
    (docs/math.md section 10).

    ``X_train`` (n, d) and ``X_test`` (m, d): rows as given, of any norm (``normalize=True``
    projects them onto the unit sphere; docs/math.md section 11);
    ``y_train`` (n,) or (n, o), ``y_test`` (m,) or (m, o) (gives ``test_loss``).  ``t``: None
    (t = inf), a number >= 0 or a sequence (a leading time axis on every output).
    ``ridge`` >= 0: gradient flow with weight decay; at t = inf kernel ridge regression
    K(x, X) (K + ridge I)^{-1} y.  ``which="nngp"``: the NNGP kernel instead (t = inf: the
    Bayesian posterior mean, with noise variance n * ridge).  ``step``: full-batch gradient
    descent with this learning rate instead of gradient flow (t is then step x steps).

    ``solver``: ``"dense"`` (K assembled through the tiles in memory: the finite times by
    block Krylov on K, each pass one GEMM, when it converges within a budget of passes (a
    basis below n / 4, a tenth of eigh's flops), else one eigh of K for every t; t = inf by
    one Cholesky of K + ridge I, or of K when the certified bound shows it invertible;
    ``info["dense"]`` says which ran and why: docs/math.md section 10), ``"krylov"``
    (matrix-free: block Krylov for finite t, CG preconditioned by the top-``rank``
    eigenpairs for t = inf; memory O(n (o passes + rank))), or ``"auto"`` (dense for
    n <= 20,000 in this process, else matrix-free); ``client``: a ``distributed.Client``
    for the matrix-free passes.  ``tol``: the relative accuracy the Krylov passes aim for
    (matrix-free within ``max_passes`` passes, ``converged`` says whether they did; dense
    on the assembled K).

    ``checkpoint``: a directory (made if missing) for the matrix-free path: the state of
    its block Krylov (run name ``predict-krylov``), of the preconditioner's eigensolve
    (``predict-eig``) and of CG (``predict-cg``) is saved after passes, and a rerun of the
    same computation resumes from it, bit for bit the uninterrupted result
    (``info["checkpoint"]`` says how many passes it took over).  The directory is held for
    the whole run (a second run on it raises ``CheckpointBusy``), and a checkpoint of
    another computation (network, X, y, times, ridge, which, step, tol, rank, method,
    tile_tol, with or without test points) raises ``CheckpointMismatch`` before any work;
    ``fastntk.spectrum.checkpoint.clear_directory(DIR)`` discards it.  ``max_passes`` is
    not part of the identity: a rerun with more passes continues an unconverged run.  The
    dense path has no passes to save: ``checkpoint`` with it (solver ``"dense"``, or
    ``"auto"`` choosing it) is a ValueError naming ``solver="krylov"``.

    At t = inf without a ridge, K must be certifiably invertible (the certified lower bound
    of docs/math.md section 7, or, on the dense path, eigh's lambda_min less its error, above
    1,000 times the perturbation level of K): otherwise SingularKernelError (a ValueError)
    suggesting a ridge.  The error estimates scale with Theta(1), or off the sphere with the
    largest diagonal entry of Theta (``NTK.diagonal``), and the certified bound is that of
    docs/math.md section 11 (per-norm coefficient tables).  Raises TypeError/ValueError for
    bad rows, labels, times or options.
    """
    t0 = time.perf_counter()
    which = check_which(which)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if np.ndim(X_train) == 1:  # check_rows would take it as one point
        raise ValueError(f"X_train must be a 2-D array (n points x d), got shape "
                         f"{np.shape(X_train)}: X.reshape(-1, 1) for n points of one "
                         "feature")
    X = check_rows(X_train, "X_train", normalize)
    n, d = X.shape
    y = check_labels(y_train, n, "y_train")
    vector = y.ndim == 1
    Y = y.reshape(n, -1)
    o = Y.shape[1]
    Xt = Yt = None
    if X_test is not None:
        Xt = check_rows(X_test, "X_test", normalize)
        if Xt.shape[1] != d:
            raise ValueError(f"X_test has {Xt.shape[1]} columns but X_train has {d}")
    if y_test is not None:
        if Xt is None:
            raise ValueError("y_test needs X_test (the test points it labels)")
        Yt = check_labels(y_test, len(Xt), "y_test").reshape(len(Xt), -1)
        if Yt.shape[1] != o:
            raise ValueError(f"y_test has {Yt.shape[1]} outputs but y_train has {o}")
    times, scalar = check_times(t)
    ridge = check_ridge(ridge)
    if step is not None:
        if isinstance(step, bool) or not (isinstance(step, (int, float)) and step > 0
                                          and math.isfinite(step)):
            raise ValueError(f"step (the learning rate) must be a finite number > 0, got "
                             f"{step!r}")
        step = float(step)
        for tt in times[np.isfinite(times)]:
            whole_steps(float(tt), step)  # before any work
    tol = float(tol)
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    max_passes = check_count(max_passes, "max_passes")
    if solver == "auto":
        solver = "dense" if client is None and n <= DENSE_MAX else "krylov"
    if solver == "dense" and client is not None:
        raise ValueError("solver='dense' runs in this process: drop the cluster client, or "
                         "use solver='krylov'")
    checkpoints = {}
    if checkpoint is not None:
        checkpoints = _checkpoints(checkpoint, None if solver == "dense" else solver, net,
                                   X, Y, times, ridge, which, step, tol,
                                   _preconditioner_rank(n, d, rank), method, tile_tol,
                                   Xt is not None)
    # the directory held for the whole run: one writer, a foreign checkpoint refused now
    with contextlib.ExitStack() as held:
        for ck in checkpoints.values():
            held.enter_context(ck)
        return _predict(net, X, Y, Xt, Yt, times, scalar, vector, ridge, which, solver,
                        client, step, tol, rank, max_passes, method, tile_tol, device,
                        progress, checkpoints, t0)


def _predict(net, X, Y, Xt, Yt, times, scalar, vector, ridge, which, solver, client, step,
             tol, rank, max_passes, method, tile_tol, device, progress, checkpoints,
             t0) -> Prediction:
    """The work of :func:`predict` on checked inputs (``checkpoints``: run name ->
    Checkpoint, held; empty without a checkpoint)."""
    n, d = X.shape
    o = Y.shape[1]
    spec = tile_spec(net, method, tile_tol, which)
    # the scale of every entry: Theta(1) on the sphere, else the largest diagonal entry
    one = diagonal_scale(net, X, Xt, which=which)
    # ||E||_2 <= n * (entry error / n)
    perturbation = spec.entry_error(one, rows_on_sphere(X, Xt)) + 16 * _EPS * one
    need_bound = ridge == 0 and bool(np.isinf(times).any())
    bound = None
    info: dict = {"solver": solver, "rows_on_sphere": rows_on_sphere(X, Xt)}
    if need_bound:  # rows of any norm: docs/math.md section 11
        bound = least_eigenvalue_bound(net, X, which=which)
        info["lower_bound"] = {"value": bound.value, "message": bound.message}
    certified = 0.0 if bound is None else bound.value
    alpha = Xt is not None
    if solver == "dense":
        theta, _ = assemble_kernel(net, X, method, tile_tol, which, device)
        theta *= 1.0 / n
        parts, dense_info = dense_parts(theta, Y, times, ridge, alpha=alpha,
                                        perturbation=perturbation, certified_min=certified,
                                        overwrite=True, step=step, tol=tol)
        del theta
        info.update(dense_info)
    else:
        parts = _matrix_free(net, X, Y, times, ridge, alpha, client, step, tol, rank,
                             max_passes, method, tile_tol, device, which, perturbation,
                             certified, need_bound, progress, info, one, checkpoints)
    dyn = _merge(times, parts)
    R = dyn.residual
    train = Y[None] - R
    ynorm2 = float(np.sum(Y * Y))
    rn = np.sqrt(np.sum(R * R, axis=(1, 2)))
    train_loss = rn**2 / (2 * n * o)
    train_loss_err = (2 * rn * dyn.residual_error + dyn.residual_error**2) / (2 * n * o)
    test = test_err = test_loss = test_loss_err = None
    m = 0
    if Xt is not None:
        m = len(Xt)
        A = dyn.alpha  # (T, n, o)
        stacked = np.ascontiguousarray(A.transpose(1, 0, 2).reshape(n, -1))
        F = theta_tile_matvec(spec, Xt, X, stacked, device=device) / n
        test = F.reshape(m, len(times), o).transpose(1, 0, 2)
        anorm = np.sqrt(np.sum(A * A, axis=(1, 2)))
        test_err = (math.sqrt(m / n) * one * dyn.alpha_error
                    + math.sqrt(m * n) * perturbation / n * anorm)
        if Yt is not None:
            D = test - Yt[None]
            dn = np.sqrt(np.sum(D * D, axis=(1, 2)))
            test_loss = dn**2 / (2 * m * o)
            test_loss_err = (2 * dn * test_err + test_err**2) / (2 * m * o)
    info["label_norm2"] = ynorm2

    def shape(v, per_time=True):
        if v is None:
            return None
        if vector and per_time and v.ndim == 3:
            v = v[..., 0]
        return v[0] if scalar else v

    return Prediction(
        times=times[0] if scalar else times, train=shape(train),
        train_error=shape(dyn.residual_error), train_loss=shape(train_loss),
        train_loss_error=shape(train_loss_err), test=shape(test), test_error=shape(test_err),
        test_loss=shape(test_loss), test_loss_error=shape(test_loss_err), ridge=ridge,
        which=which, step=step, n=n, outputs=o, m=m,
        method=" + ".join(dict.fromkeys(p.method for p in parts)),
        passes=sum(p.passes for p in parts), converged=all(p.converged for p in parts),
        seconds=time.perf_counter() - t0, info=info, alpha=shape(dyn.alpha))


def _preconditioner_rank(n: int, d: int, rank: int | None) -> int:
    """The number of top eigenpairs that precondition CG (``rank``, default d + 17, at most
    128, and below n - 1)."""
    return min(n - 2, rank if rank is not None else min(d + 17, 128))


def _checkpoints(directory, solver, net, X, Y, times, ridge, which, step, tol, rank, method,
                 tile_tol, alpha) -> dict:
    """The Checkpoints of the matrix-free path in ``directory``, one per run name, all with
    the metadata of the whole computation (so that a file of any other one is refused);
    a ValueError for the dense path (``solver`` None)."""
    from ..spectrum.checkpoint import Checkpoint, data_fingerprint, run_metadata

    if solver is None:
        raise ValueError("a checkpoint saves the passes of the matrix-free path, and the "
                         "dense path (K in memory, one eigh; solver=\"auto\" chooses it for n "
                         f"<= {DENSE_MAX:,} without a cluster) has none: give solver=\"krylov\" "
                         "(CLI: --solver krylov) to checkpoint, or no checkpoint")
    meta = run_metadata(
        net.to_dict(), data_fingerprint(X), labels=data_fingerprint(Y),
        times=[t if math.isfinite(t) else "inf" for t in times.tolist()], ridge=ridge,
        which=which, step=step, tol=tol, rank=rank, method=method, tile_tol=tile_tol,
        test_points=bool(alpha), solver="krylov",
        preconditioner={"tol": PRECONDITIONER_TOL, "passes": PRECONDITIONER_PASSES})
    return {name: Checkpoint(directory, name, meta)
            for name in ("predict-krylov", "predict-eig", "predict-cg")}


def _matrix_free(net, X, Y, times, ridge, alpha, client, step, tol, rank, max_passes, method,
                 tile_tol, device, which, perturbation, certified, need_bound, progress,
                 info, at_one, checkpoints) -> list[Dynamics]:
    """The matrix-free path: Krylov for the finite times, preconditioned CG for t = inf.
    ``at_one``: the largest diagonal entry of Theta (Theta(1) on the sphere);
    ``checkpoints``: run name -> Checkpoint (empty: none)."""
    n, d = X.shape
    level = perturbation + 8 * _EPS * math.sqrt(n) * at_one  # ||K|| <= Tr K <= max diagonal
    if need_bound and certified <= SINGULAR_MARGIN * level:
        raise SingularKernelError(singular_message(certified, level, "certified (docs/math.md "
                                                   "section 7)"))
    kw = dict(method=method, tol=tile_tol, which=which, device=device)
    parts = []
    resumed: dict = {}  # passes taken over from the checkpoint, per part
    finite = times[np.isfinite(times)]
    op = kernel_operator(net, X, client=client, progress=progress, **kw)
    try:
        if finite.size:
            parts.append(krylov_dynamics(op, Y, finite, ridge, alpha=alpha, tol=tol,
                                         max_passes=max_passes, perturbation=perturbation,
                                         lam_low=certified, lam_high=at_one,
                                         progress=progress, step=step,
                                         checkpoint=checkpoints.get("predict-krylov")))
            resumed["krylov"] = parts[-1].info["passes_resumed"]
        if np.isinf(times).any():
            k = check_count(_preconditioner_rank(n, d, rank), "rank")
            eig = top_eigenvalues(net, X, k + 1, tol=PRECONDITIONER_TOL, eigenvectors=True,
                                  client=client, assemble=False, which=which,
                                  max_passes=PRECONDITIONER_PASSES,
                                  method=method, tile_tol=tile_tol, device=device,
                                  progress=progress, checkpoint=checkpoints.get("predict-eig"))
            resumed["eig"] = eig.passes_resumed
            info["preconditioner"] = {"rank": k, "passes": eig.passes,
                                      "lambda_1": float(eig.eigenvalues[0]),
                                      "lambda_next": float(eig.eigenvalues[k])}
            cg = ridge_cg(op, Y, ridge, V=eig.eigenvectors[:, :k],
                          eigenvalues=eig.eigenvalues[:k], sigma=float(eig.eigenvalues[k]),
                          tol=tol, max_passes=max_passes, lam_low=certified,
                          perturbation=level, progress=progress,
                          checkpoint=checkpoints.get("predict-cg"))
            resumed["cg"] = cg.info["passes_resumed"]
            cg.passes += eig.passes
            info["cg"] = cg.info
            parts.append(cg)
    finally:
        op.close()
    if checkpoints:
        info["checkpoint"] = {"directory": next(iter(checkpoints.values())).directory,
                              "passes_resumed": resumed}
    return parts


def _merge(times: np.ndarray, parts: list[Dynamics]) -> Dynamics:
    """One Dynamics over ``times`` from parts computed for subsets of them (in order)."""
    if len(parts) == 1 and len(parts[0].times) == len(times):
        return parts[0]
    n, o = parts[0].residual.shape[1:]
    T = len(times)
    R = np.empty((T, n, o))
    Re = np.empty(T)
    with_alpha = parts[0].alpha is not None
    A = np.empty((T, n, o)) if with_alpha else None
    Ae = np.empty(T) if with_alpha else None
    for p in parts:
        for j, tp in enumerate(p.times):
            for i in np.flatnonzero(times == tp):
                R[i], Re[i] = p.residual[j], p.residual_error[j]
                if with_alpha:
                    A[i], Ae[i] = p.alpha[j], p.alpha_error[j]
    return Dynamics(times, R, Re, A, Ae, parts[0].method)
