"""dataflow.logger for upstream's core/Operator.py."""
from dataflow import get_logger  # noqa: F401
