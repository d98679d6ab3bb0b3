"""dtda.train: replayable seeded training.

A :class:`Recipe` fixes the model factory, per-example loss, optimiser (:class:`SGD`,
:class:`AdamW`), schedule, batching and dtype; each member's randomness comes from named seed
streams (init, batches, dropout), and its :class:`Record` keeps batch indices and checkpoints so
the run can be replayed and differentiated (``dtda.attribute``). Groups of seeds train in
lockstep as one batched computation (:func:`train_group`, :mod:`dtda.train.lockstep`).
"""

from dtda.train.data import Data, as_data
from dtda.train.ensemble import Ensemble, retrain, train_ensemble
from dtda.train.lockstep import train_group
from dtda.train.member import load_trained, replay, train_member
from dtda.train.record import Member, Record
from dtda.train.optim import SGD, AdamW
from dtda.train.recipe import Recipe
from dtda.train.step import Step

__all__ = ["Recipe", "SGD", "AdamW", "Ensemble", "Member", "Record", "Step", "Data", "as_data",
           "train_ensemble", "train_member", "train_group", "retrain", "replay", "load_trained"]
