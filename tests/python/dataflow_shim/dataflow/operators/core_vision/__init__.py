"""clipeval's drop-in operators where DataFlow-MM's pipelines import theirs."""
from clipeval.dataflow import CLIPScoreFilter, ImageCLIPEvaluator, ImageClipFilter  # noqa: F401
