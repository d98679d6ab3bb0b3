"""dtda: distributional training data attribution.

How would the *distribution* of a measurement over training runs (seeds) change if a training
example were removed? dtda trains seeded ensembles, computes per-seed removal effects (exact unrolled
differentiation through each seed's training run) and reports distributional statistics: mean shift,
variance increase, Wasserstein distance, quantile shifts. Importing dtda never fails for want of
native code; ops that need it explain what is missing.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dtda")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

from dtda import ops  # noqa: E402
from dtda.samples import SeedSamples  # noqa: E402
from dtda.stats import Distributional, distributional  # noqa: E402
from dtda import measure  # noqa: E402
from dtda.train import SGD, AdamW, Ensemble, Recipe, retrain, train_ensemble  # noqa: E402
from dtda.attribute import influence, unroll  # noqa: E402

__all__ = ["ops", "__version__", "SeedSamples", "Distributional", "distributional", "measure", "Recipe",
           "SGD", "AdamW", "Ensemble", "train_ensemble", "retrain", "unroll", "influence"]
