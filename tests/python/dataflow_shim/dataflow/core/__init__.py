"""dataflow.core: upstream's Operator.py (verbatim, from ../shared/dataflow-mm)."""
import os

from dataflow import UPSTREAM

__path__.append(os.path.join(UPSTREAM, "core"))

from .Operator import OperatorABC  # noqa: E402,F401
