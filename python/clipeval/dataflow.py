"""DataFlow-MM operators backed by clipeval: drop-in replacements, same constructors, same
run() signatures, same outputs, without torch or transformers.

    from clipeval.dataflow import ImageCLIPEvaluator
    op = ImageCLIPEvaluator(model_name="openai/clip-vit-base-patch32")
    op.run(storage=storage.step(), input_image_key="image", input_text_key="caption")

The operators subclass DataFlow's OperatorABC when `dataflow` is importable, else a local base
class: DataFlow is never required. They read with storage.read("dataframe") and write with
storage.write(df), so every format the storage handles (jsonl, json, csv, parquet, pickle)
works through pandas.

Shared by every operator here (ImageClipFilter and CLIPScoreFilter will join
ImageCLIPEvaluator): the process-wide model cache (_load_model: several operators on one
model load it once), and _pair_cosines, which decodes and encodes each distinct image and text
once, in batches, and returns the raw float32 cosine of each row with its status.
"""
import logging

import numpy as np

from .cache import cached_model
from .model import DEFAULT_MODEL
from .scoring import SCORED, Scorer, column_values, dataflow_scores

try:  # DataFlow's own base class when DataFlow is installed
    from dataflow.core import OperatorABC as _OperatorBase
except Exception:  # noqa: BLE001 - any failure to import DataFlow means "not installed"
    from abc import ABC, abstractmethod

    class _OperatorBase(ABC):
        """Stands in for dataflow.core.OperatorABC when DataFlow is not installed."""

        @abstractmethod
        def run(self, *args, **kwargs):
            pass


def _get_logger():
    try:
        from dataflow import get_logger
        return get_logger()
    except Exception:  # noqa: BLE001
        return logging.getLogger("clipeval.dataflow")


def _load_model(model_name, device=None, threads=None, precision="fp32"):
    """The process's cached model (DataFlow's device=None means "cuda if available")."""
    return cached_model(model_name, device="auto" if device is None else device,
                        threads=threads, precision=precision)


def _pair_cosines(model, df, image_key, text_key, logger, *, texts=None, blank=None,
                  check_blank_images=True, **options):
    """(cos float64 [N], status int8 [N]) for the rows of df: cos is the float32 dot product of
    the L2-normalised embeddings (NaN where status != SCORED). texts defaults to
    str(row[text_key]) as pandas holds it; warnings go to the operator's logger."""
    scorer = Scorer(model, warn=logger.warning, **options)
    n = len(df)
    images = column_values(df, image_key, 0, n)
    if texts is None:
        texts = [str(v) for v in column_values(df, text_key, 0, n)]
    return scorer.pairs(images, texts, labels=df.index, blank=blank,
                        check_blank_images=check_blank_images)


class ImageCLIPEvaluator(_OperatorBase):
    """DataFlow-MM's ImageCLIPEvaluator on clipeval: adds `output_key` = clamp((cos + 1) / 2,
    0, 1) per row; an unreadable image scores 0.0 with a warning, an empty text 0.0.

    model_name: a folder or an HF model id (found in the HF cache).
    device:     None (CUDA when usable, else CPU), "cpu", "cuda" or "cuda:0".
    Further keyword arguments (clipeval's own): threads, precision, batch_size, cache_entries,
    image_root, max_text_bytes, exif_transpose, max_pixels, max_file_bytes.
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, device: str = None, *, threads=None,
                 precision="fp32", **options):
        self.logger = _get_logger()
        self.model_name = model_name
        self.model = _load_model(model_name, device, threads, precision)
        self.device = self.model.device
        Scorer(self.model, **options)  # checks the options now, not at run()
        self.options = options

    @staticmethod
    def get_desc(lang: str = "zh") -> str:
        if lang == "zh":
            return (
                "CLIPEvaluator 算子：基于预训练 CLIP 模型计算图像与文本之间的语义对齐分数。\n"
                "输入：通过 run(storage, input_image_key, output_text_key, output_key) 中的 input_image_key 和 output_text_key 指定，"
                "分别从 DataFlowStorage 中读取包含图像路径的列和对应文本内容的列；\n"
                "输出：在同一 DataFrame 中新增由 output_key 指定的列（默认名为 clip_score），"
                "每一行对应一个图文对的相似度分数，数值范围为 [0, 1]，数值越大表示图像与文本语义越接近；\n"
                "功能：对 DataFrame 中逐行遍历图文对，调用 CLIP 模型编码图像与文本，计算归一化余弦相似度，"
                "用于图文匹配、召回重排序、生成结果评估等场景的自动化评分。"
            )
        else:
            return (
                "CLIPEvaluator operator: computes the semantic alignment score between images and texts using a pretrained CLIP model.\n"
                "Inputs: specified via run(storage, input_image_key, output_text_key, output_key); "
                "input_image_key points to the column containing image file paths, and output_text_key points to the column containing text; \n"
                "Output: a new column in the same DataFrame, named by output_key (default 'clip_score'), "
                "where each row stores the similarity score of an image-text pair in the range [0, 1], "
                "with larger values indicating stronger semantic alignment; \n"
                "Function: iterates over the DataFrame row by row, encodes images and texts with the CLIP model, "
                "and computes a normalized cosine similarity, which can be used for image-text matching, "
                "reranking, or automatic evaluation of generation results."
            )

    def compute_similarity(self, image_path, text: str) -> float:
        """The score of one pair (upstream's per-row method)."""
        return float(self.model.score([image_path], [text], warn=self.logger.warning,
                                      **self.options)[0])

    def run(self, storage, input_image_key: str = "image_path", input_text_key: str = "text",
            output_key: str = "clip_score"):
        df = storage.read("dataframe")
        cos, status = _pair_cosines(self.model, df, input_image_key, input_text_key,
                                    self.logger, **self.options)
        scores = np.where(status == SCORED, dataflow_scores(cos), 0.0)
        df[output_key] = scores if len(df) else []
        storage.write(df)
        return [output_key]
