"""Memory-lean storage of the eigensolver's orthonormal basis Z (n x m).

The solver (:class:`fastntk.spectrum.solver.BlockKrylov`) keeps a Krylov decomposition
A Z = Z H + Y G^T (docs/math.md section 6): only Z, the n x b residual block Y and the small
matrices H, G; A Z itself is never stored.  Z grows by a block of columns per pass and
shrinks on a thick restart (Z <- Z S).  Here:

* Z lives in one column-major (Fortran-order) buffer allocated once with room for the largest
  basis the run may reach; a pass writes its block into the next columns (no copy of the old
  basis) and a column only costs memory once written (pages of ``np.empty`` are committed on
  first touch);
* products that would make an n x m temporary (a restart Z <- Z S, Ritz vectors Z S) run over
  row chunks of ``chunk_rows`` rows, so their temporaries are chunk x m; a restart is done in
  place (row r of Z S depends only on row r of Z).

Peak memory is then the basis (n m_max doubles) plus a few n x block arrays of the pass in
flight.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KrylovBasis"]


class KrylovBasis:
    """An orthonormal basis Z (n x m), growing by blocks of columns (see the module docstring).

    ``capacity`` columns are reserved up front (virtual memory until written); appending
    beyond it re-allocates (one copy of the basis).
    """

    def __init__(self, n: int, capacity: int, chunk_rows: int = 8192) -> None:
        self.n = int(n)
        self.m = 0
        self.chunk_rows = max(1, int(chunk_rows))
        self._Z = np.empty((self.n, max(1, int(capacity))), order="F")

    # ---------------------------------------------------------------- storage
    @property
    def capacity(self) -> int:
        return self._Z.shape[1]

    @property
    def Z(self) -> np.ndarray:
        """The basis, an (n, m) view (valid until the next append or rotate)."""
        return self._Z[:, : self.m]

    def _reserve(self, cols: int) -> None:
        if cols <= self.capacity:
            return
        new = np.empty((self.n, max(cols, self.capacity + self.capacity // 2)), order="F")
        new[:, : self.m] = self._Z[:, : self.m]
        self._Z = new

    def append(self, P: np.ndarray) -> None:
        """Add the columns P (n x b: orthonormal and orthogonal to Z)."""
        if P.ndim != 2 or P.shape[0] != self.n:
            raise ValueError(f"append needs an (n, b) array with n = {self.n}, got {P.shape}")
        b = P.shape[1]
        self._reserve(self.m + b)
        self._Z[:, self.m: self.m + b] = P
        self.m += b

    def load(self, Z: np.ndarray) -> None:
        """Replace the contents by Z (e.g. from a checkpoint)."""
        self.m = 0
        self.append(np.asarray(Z, dtype=np.float64))

    def _chunks(self):
        for s in range(0, self.n, self.chunk_rows):
            yield slice(s, min(s + self.chunk_rows, self.n))

    # ---------------------------------------------------------------- products
    def coefficients(self, W: np.ndarray) -> np.ndarray:
        """Z^T W (m x b)."""
        return self.Z.T @ W

    def subtract(self, W: np.ndarray, C: np.ndarray, rows=None) -> np.ndarray:
        """W <- W - Z C in place (``rows``: only the basis columns ``rows``, C's rows)."""
        if self.m == 0 or C.size == 0:
            return W
        Z = self.Z if rows is None else self._Z[:, rows]
        W -= Z @ C
        return W

    def project_out(self, W: np.ndarray) -> np.ndarray:
        """W - Z (Z^T W), in place (one classical Gram-Schmidt sweep); returns Z^T W."""
        if self.m == 0:
            return np.zeros((0, W.shape[1]))
        C = self.coefficients(W)
        W -= self.Z @ C
        return C

    def combine(self, S: np.ndarray) -> np.ndarray:
        """Z S (n x q: Ritz vectors), by row chunks."""
        S = np.asarray(S, dtype=np.float64)
        out = np.empty((self.n, S.shape[1]))
        for r in self._chunks():
            out[r] = self._Z[r, : self.m] @ S
        return out

    def rotate(self, S: np.ndarray) -> None:
        """Thick restart in place: Z <- Z S (S is m x q, q <= m), by row chunks."""
        q = S.shape[1]
        if S.shape[0] != self.m or q > self.m:
            raise ValueError(f"rotate needs an (m, q) matrix with m = {self.m} >= q, got "
                             f"{S.shape}")
        S = np.ascontiguousarray(S, dtype=np.float64)
        for r in self._chunks():
            self._Z[r, :q] = self._Z[r, : self.m] @ S
        self.m = q
