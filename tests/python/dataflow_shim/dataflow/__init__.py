"""A minimal stand-in for the `dataflow` package (DataFlow-MM), for tests only.

Upstream's dataflow/__init__.py pulls in torch, registries and rich. This shim provides only
what the verbatim upstream files in ../shared/dataflow-mm need (get_logger, the operator
registry), and extends the package path to that folder, so that upstream's own
dataflow/utils/storage.py, dataflow/core/Operator.py and the pipeline scripts run unchanged,
with clipeval's operators in place of the torch ones (dataflow.operators.core_vision)."""
import logging
import os

_SHARED = os.environ.get("CLIPEVAL_SHARED") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "..", "..", "shared")
UPSTREAM = os.path.join(os.path.abspath(_SHARED), "dataflow-mm", "dataflow")
__path__.append(UPSTREAM)


def get_logger():
    return logging.getLogger("dataflow")
