"""Memory-lean storage of a Krylov basis Z (n x m, orthonormal columns) and its image A Z.

The eigensolver (:class:`fastntk.solver.BlockKrylov`) needs Z and A Z for Rayleigh-Ritz
(H = Z^T A Z), residual norms ||A Z s_i - theta_i Z s_i|| and thick restarts Z <- Z S.  Done
naively (``np.hstack`` per pass, full n x m Ritz vector and residual matrices) that holds three
to four copies of the basis at once; at n = 200,000 with a 128-wide block each copy of one pass
is 205 MB.  Here:

* Z and A Z live in two column-major (Fortran-order) buffers with spare capacity; a pass
  writes its block into the next columns (no copy of the old basis), and a column only costs
  memory once written (pages of ``np.empty`` are committed on first touch);
* every product with the n rows (residual norms, projections, restarts) runs over row chunks
  of ``chunk_rows`` rows, so its temporaries are chunk x m, not n x m;
* a thick restart Z <- Z S, A Z <- (A Z) S is done in place, chunk by chunk (row r of Z S
  depends only on row r of Z).

Peak memory is then about 2 n m_max doubles for the basis plus a few n x block arrays for the
pass in flight.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KrylovBasis"]


class KrylovBasis:
    """Z and A Z, n x m each, growing by blocks of columns (see the module docstring)."""

    def __init__(self, n: int, capacity: int, chunk_rows: int = 8192) -> None:
        self.n = int(n)
        self.m = 0
        self.chunk_rows = max(1, int(chunk_rows))
        self._Z = np.empty((self.n, max(1, int(capacity))), order="F")
        self._AZ = np.empty_like(self._Z, order="F")

    # ---------------------------------------------------------------- storage
    @property
    def capacity(self) -> int:
        return self._Z.shape[1]

    @property
    def Z(self) -> np.ndarray:
        """The basis, an (n, m) view (valid until the next append or rotate)."""
        return self._Z[:, : self.m]

    @property
    def AZ(self) -> np.ndarray:
        """A Z, an (n, m) view."""
        return self._AZ[:, : self.m]

    def _reserve(self, cols: int) -> None:
        if cols <= self.capacity:
            return
        cap = max(cols, self.capacity + self.capacity // 2)
        for name in ("_Z", "_AZ"):
            old = getattr(self, name)
            new = np.empty((self.n, cap), order="F")
            new[:, : self.m] = old[:, : self.m]
            setattr(self, name, new)

    def append(self, P: np.ndarray, W: np.ndarray) -> None:
        """Add the columns P (orthonormal, orthogonal to Z) and their images W = A P."""
        if P.shape != W.shape or P.ndim != 2 or P.shape[0] != self.n:
            raise ValueError(f"append needs two (n, b) arrays with n = {self.n}, got "
                             f"{P.shape} and {W.shape}")
        b = P.shape[1]
        self._reserve(self.m + b)
        self._Z[:, self.m: self.m + b] = P
        self._AZ[:, self.m: self.m + b] = W
        self.m += b

    def load(self, Z: np.ndarray, AZ: np.ndarray) -> None:
        """Replace the contents by (Z, AZ) (e.g. from a checkpoint)."""
        self.m = 0
        self.append(np.asarray(Z, dtype=np.float64), np.asarray(AZ, dtype=np.float64))

    def _chunks(self):
        for s in range(0, self.n, self.chunk_rows):
            yield slice(s, min(s + self.chunk_rows, self.n))

    # ---------------------------------------------------------------- products
    def gram(self) -> np.ndarray:
        """H = Z^T (A Z), symmetrised (m x m)."""
        H = self.Z.T @ self.AZ
        return 0.5 * (H + H.T)

    def project_out(self, P: np.ndarray) -> np.ndarray:
        """P - Z (Z^T P), in place, by row chunks (one classical Gram-Schmidt sweep)."""
        if self.m == 0:
            return P
        C = self.Z.T @ P
        for r in self._chunks():
            P[r] -= self._Z[r, : self.m] @ C
        return P

    def _products(self, S: np.ndarray, theta: np.ndarray | None):
        """Row chunks (rows, block) of Z S, or with ``theta`` of (A Z) S - (Z S) diag(theta)."""
        for r in self._chunks():
            U = self._Z[r, : self.m] @ S
            yield r, (U if theta is None else self._AZ[r, : self.m] @ S - U * theta)

    def combine(self, S: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """Z S (Ritz vectors), or with ``theta`` the residuals (A Z) S - (Z S) diag(theta)."""
        S = np.asarray(S, dtype=np.float64)
        out = np.empty((self.n, S.shape[1]))
        for r, block in self._products(S, theta):
            out[r] = block
        return out

    def residual_norms(self, S: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """||(A Z) s_i - theta_i Z s_i|| for every column s_i of S, without forming them."""
        sq = np.zeros(S.shape[1])
        for _, R in self._products(S, theta):
            sq += np.einsum("ij,ij->j", R, R)
        return np.sqrt(sq)

    def rotate(self, S: np.ndarray) -> None:
        """Thick restart in place: Z <- Z S and A Z <- (A Z) S (S is m x q, q <= m)."""
        q = S.shape[1]
        if S.shape[0] != self.m or q > self.m:
            raise ValueError(f"rotate needs an (m, q) matrix with m = {self.m} >= q, got "
                             f"{S.shape}")
        for r in self._chunks():
            self._Z[r, :q] = self._Z[r, : self.m] @ S
            self._AZ[r, :q] = self._AZ[r, : self.m] @ S
        self.m = q
