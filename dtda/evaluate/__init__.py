"""dtda.evaluate: predictions checked against coupled retraining (PAPER §8).

- :func:`retrain_measurements` / :func:`retrained_samples`: coupled retraining in mode
  ``masked`` (same batches, removed examples weighted 0) or ``subset`` (from scratch on D∖G with
  the same seed streams), cached on disk (:class:`RetrainCache`) and spread over an executor.
- :func:`lds`: LDS and distributional LDS with noise ceilings and ensemble-size curves.
- :func:`predictions`: linearised m_s + δ_s(G) and non-linear m(θ_s + Δθ_s(G)) by forward mode.
- :func:`confirm`: predicted against actual effects of removing chosen examples, with the
  chaotic floor from null controls and a verdict per measurement.
"""

from dtda.evaluate.cache import CacheMismatch, RetrainCache
from dtda.evaluate.confirm import ConfirmResult, confirm
from dtda.evaluate.lds import LDS_STATISTICS, LDSResult, lds
from dtda.evaluate.predict import predictions
from dtda.evaluate.removal import Removal
from dtda.evaluate.retrain import MODES, retrain_measurements, retrained_samples

__all__ = ["MODES", "Removal", "RetrainCache", "CacheMismatch", "retrain_measurements", "retrained_samples",
           "lds", "LDSResult", "LDS_STATISTICS", "confirm", "ConfirmResult", "predictions"]
