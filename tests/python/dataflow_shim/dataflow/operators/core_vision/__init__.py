"""clipeval's drop-in operators where DataFlow-MM's pipelines import theirs."""
from clipeval.dataflow import ImageCLIPEvaluator  # noqa: F401
