"""Aggregators: turn the Jacobian of the task losses into one update direction.

Every aggregator is called on a matrix ``J`` of shape ``(m, n)`` (one row per task) and returns a direction
of shape ``(n,)``; ``weights(J)`` gives the ``m`` weights ``w`` such that the direction is ``w @ J``.
"""

from .aligned_mtl import AlignedMTL
from .base import Aggregator
from .cagrad import CAGrad
from .dualproj import DualProj
from .gradvac import GradVac
from .imtlg import IMTLG
from .mean import Mean
from .mgda import MGDA
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .random import Random
from .upgrad import UPGrad

__all__ = [
    "IMTLG",
    "MGDA",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "DualProj",
    "GradVac",
    "Mean",
    "NashMTL",
    "PCGrad",
    "Random",
    "UPGrad",
]
