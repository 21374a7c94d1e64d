"""Stage 9, after analysis: what the spectrum is for (docs/math.md section 10).

    dynamics   gradient flow and kernel regression as functions of K: the dense path (one
               eigh or Cholesky for every t), the matrix-free block Krylov path, and CG
               preconditioned by the top-k eigenpairs
    alignment  label power, C(k), the centred kernel-target alignment, the certified
               training-loss band
    predict    fastntk.predict and its typed result Prediction
    training   finite-width networks trained by gradient descent, beside the prediction
    plots      the label-spectrum and prediction figures
"""

from .alignment import LabelSpectrum, label_spectrum
from .dynamics import SingularKernelError
from .predict import Prediction, predict
from .training import train_networks

__all__ = ["LabelSpectrum", "Prediction", "SingularKernelError", "label_spectrum", "predict",
           "train_networks"]
