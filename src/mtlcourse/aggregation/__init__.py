"""Aggregators: turn the Jacobian of the task losses into one update direction.

Every aggregator is called on a matrix ``J`` of shape ``(m, n)`` (one row per task) and returns a direction
of shape ``(n,)``; ``weights(J)`` gives the ``m`` weights ``w`` such that the direction is ``w @ J``.
"""

from .base import Aggregator
from .cagrad import CAGrad
from .mean import Mean
from .mgda import MGDA
from .pcgrad import PCGrad
from .upgrad import UPGrad

__all__ = ["MGDA", "Aggregator", "CAGrad", "Mean", "PCGrad", "UPGrad"]
