"""DataFlow-MM operators backed by clipeval: drop-in replacements, same constructors, same
run() signatures, same outputs, without torch or transformers.

    from clipeval.dataflow import ImageCLIPEvaluator
    op = ImageCLIPEvaluator(model_name="openai/clip-vit-base-patch32")
    op.run(storage=storage.step(), input_image_key="image", input_text_key="caption")

    from clipeval.dataflow import ImageClipFilter, CLIPScoreFilter
    ImageClipFilter(model_name=...).run(storage.step(), input_image_key="image",
                                        input_caption_key="caption", threshold=0.25)
    CLIPScoreFilter(model_name=..., keep_ratio=0.8).run(storage.step(), input_image_key="image",
                                                        input_question_key="question",
                                                        input_answer_key="answer")

The operators subclass DataFlow's OperatorABC when `dataflow` is importable, else a local base
class: DataFlow is never required. They read with storage.read("dataframe") and write with
storage.write(df), so every format the storage handles (jsonl, json, csv, parquet, pickle)
works through pandas.

  operator            value per row                    rows written
  ImageCLIPEvaluator  clamp((cos + 1) / 2, 0, 1)       all, with the score column
  ImageClipFilter     clamp(cos, 0, 1)                 value >= threshold, unchanged
  CLIPScoreFilter     cos, NaN when the row failed     value >= np.percentile(non-NaN values,
                                                       (1 - keep_ratio) * 100), with the column

Where upstream's filters crash or miscount, these give a defined result (the README's
"clipeval filter" section lists each case); they are the CLI's `clipeval filter` rules:
  - ImageClipFilter: a missing caption (None, NaN) is an empty text (0.0, with upstream's
    "Empty text" warning), as are falsy ones (0, False, []); other non-strings are str()'d; a
    caption over 77 tokens is truncated.
  - CLIPScoreFilter: exactly one value per row whatever the batches; a missing question or
    answer counts as ""; no valid score at all writes an empty table with a warning.

Shared by every operator here: the process-wide model cache (_load_model: several operators on
one model load it once), and _cosines / _pair_cosines, which decode and encode each distinct
image and text once, in batches, and return the raw float32 cosine of each row with its status.
"""
import logging

import numpy as np

from .cache import cached_model
from .model import DEFAULT_MODEL
from .scoring import EMPTY_TEXT, SCORED, Scorer, column_values, dataflow_scores

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


def _attach_model(op, model_name, device, threads, precision, announce=False):
    """Gives an operator its logger, model name, model (the process's cached one) and device."""
    op.logger = _get_logger()
    if announce:
        op.logger.info(f"Loading CLIP model: {model_name}")
    op.model_name = model_name
    op.model = _load_model(model_name, device, threads, precision)
    op.device = op.model.device


def _cosines(model, images, texts, logger, *, labels=None, blank=None, check_blank_images=True,
             **options):
    """(cos float64 [N], status int8 [N]) for paired images and texts: cos is the float32 dot
    product of the L2-normalised embeddings (NaN where status != SCORED); each distinct image
    and text is encoded once, in batches; warnings go to the operator's logger."""
    scorer = Scorer(model, warn=logger.warning, **options)
    return scorer.pairs(images, texts, labels=labels, blank=blank,
                        check_blank_images=check_blank_images)


def _pair_cosines(model, df, image_key, text_key, logger, *, texts=None, **kwargs):
    """_cosines for the rows of df; texts defaults to str(row[text_key]) as pandas holds it."""
    n = len(df)
    images = column_values(df, image_key, 0, n)
    if texts is None:
        texts = [str(v) for v in column_values(df, text_key, 0, n)]
    return _cosines(model, images, texts, logger, labels=df.index, **kwargs)


def _is_missing(v):
    """pd.isna of one cell: None, a float NaN, pd.NA or NaT."""
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return v != v
    return type(v).__name__ in ("NAType", "NaTType")


def _falsy(v):
    """Python's `not v`, False where it raises (an array: upstream would crash there)."""
    try:
        return not v
    except Exception:  # noqa: BLE001
        return False


def _image_value(v):
    """DataFlow's _load_image also takes PIL images: their RGB pixels (PIL is not needed
    otherwise; paths, encoded bytes and uint8 arrays go to the library as they are)."""
    if type(v).__module__.startswith("PIL.") and hasattr(v, "convert"):
        return np.asarray(v.convert("RGB"), dtype=np.uint8)
    return v


def _clamp01(cos, status):
    """ImageClipFilter's similarity: clamp(cos, 0, 1) (NaN stays NaN, as with Python's
    min/max); 0.0 for a row that failed."""
    sim = np.where(cos > 1.0, 1.0, cos)
    sim = np.where(sim < 0.0, 0.0, sim)
    return np.where(status == SCORED, sim, 0.0)


def _check_keep_ratio(keep_ratio):
    k = float(keep_ratio)
    if not 0.0 <= k <= 1.0:  # NaN fails too
        raise ValueError(f"keep_ratio={keep_ratio!r}: expected a number in [0, 1] (numpy's "
                         "percentile refuses (1 - keep_ratio) * 100 outside [0, 100])")
    return keep_ratio


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
        _attach_model(self, model_name, device, threads, precision)
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


class ImageClipFilter(_OperatorBase):
    """DataFlow-MM's ImageClipFilter on clipeval: keeps the rows whose clamp(cos, 0, 1) is at or
    above `threshold`, writes them unchanged (no score column, index reset) and returns
    [input_image_key, input_caption_key]. An unreadable image or an empty, blank or missing
    caption gives 0.0 with a warning (the image is looked at first, as upstream).

    model_name: a folder or an HF model id (found in the HF cache).
    device:     None (CUDA when usable, else CPU), "cpu", "cuda" or "cuda:0".
    Further keyword arguments (clipeval's own): threads, precision, batch_size, cache_entries,
    image_root, max_text_bytes, exif_transpose, max_pixels, max_file_bytes.
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, device: str = None, *, threads=None,
                 precision="fp32", **options):
        _attach_model(self, model_name, device, threads, precision)
        options.pop("outcome", None)
        self.options = dict(options, outcome="similarity 0.0")
        Scorer(self.model, **self.options)  # checks the options now, not at run()

    @staticmethod
    def get_desc(lang: str = "zh") -> str:
        if lang == "zh":
            return (
                "ImageClipFilter 算子：基于预训练 CLIP 模型计算图像与文本描述的语义相似度，并按照给定阈值过滤不一致的图文对。\n"
                "输入：通过 run(storage, input_image_key, input_caption_key, threshold) 中的 input_image_key 和 input_caption_key 指定，"
                "分别从 DataFlowStorage 中读取图像路径列和对应文本描述列；阈值参数 threshold 控制保留样本的最低相似度要求（默认 0.25）；\n"
                "输出：对 DataFrame 中的每一行图文对计算 CLIP 相似度，仅保留相似度大于等于 threshold 的行，将过滤后的 DataFrame 写回存储，"
                "并返回 [input_image_key, input_caption_key] 作为后续算子的输入列名；\n"
                "功能：使用 CLIPProcessor 对图像与文本进行预处理，由 CLIPModel 提取图像与文本嵌入，归一化后计算余弦相似度并裁剪到 [0, 1] 区间，"
                "依据设定阈值实现图文一致性过滤，可用于多模态训练数据清洗、数据集构建或评测集筛选等场景。"
            )
        else:
            return (
                "ImageClipFilter operator: uses a pretrained CLIP model to compute semantic similarity between images and text "
                "and filters out image–text pairs whose similarity is below a given threshold.\n"
                "Inputs: specified via run(storage, input_image_key, input_caption_key, threshold), where input_image_key points "
                "to the column containing image file paths, input_caption_key points to the column containing text descriptions, "
                "and threshold controls the minimum similarity required for a pair to be kept (default 0.25);\n"
                "Output: for each row in the DataFrame, computes the CLIP similarity of the image–text pair, keeps only rows with "
                "similarity greater than or equal to threshold, writes the filtered DataFrame back to storage, and returns "
                "[input_image_key, input_caption_key] as the column names for downstream operators;\n"
                "Function: uses CLIPProcessor to preprocess images and text, CLIPModel to encode them into embeddings, normalizes "
                "the embeddings, computes cosine similarity and clips it into the [0, 1] range, then applies the threshold to "
                "perform image–text consistency filtering for multimodal data cleaning or evaluation set construction."
            )

    def _similarities(self, images, captions, labels=None):
        """clamp(cos, 0, 1) per row (float64), 0.0 for a failed row; warns like upstream."""
        images = [_image_value(v) for v in images]
        blank, texts = [], []
        for v in captions:
            missing = _is_missing(v)
            text = "" if missing else v if isinstance(v, str) else str(v)
            texts.append(text)
            blank.append(missing or _falsy(v) or not text or text.strip() == "")
        cos, status = _cosines(self.model, images, texts, self.logger, labels=labels,
                               blank=blank, check_blank_images=True, **self.options)
        for i in np.flatnonzero(status == EMPTY_TEXT):
            v = images[i]
            name = v if isinstance(v, str) else f"<{type(v).__name__}>"
            self.logger.warning(f"Empty text for image: {name}")
        return _clamp01(cos, status)

    def compute_similarity(self, image_path, text) -> float:
        """The similarity of one pair (upstream's per-row method)."""
        return float(self._similarities([image_path], [text])[0])

    def is_consistent(self, image_path, caption, threshold: float = 0.25) -> bool:
        return self.compute_similarity(image_path, caption) >= threshold

    def run(self, storage, input_image_key: str = "image", input_caption_key: str = "caption",
            threshold: float = 0.25):
        dataframe = storage.read("dataframe")
        n = len(dataframe)
        sims = self._similarities(column_values(dataframe, input_image_key, 0, n),
                                  column_values(dataframe, input_caption_key, 0, n),
                                  labels=dataframe.index)
        keep = sims >= threshold
        if self.logger.isEnabledFor(logging.DEBUG):
            for i in np.flatnonzero(~keep):
                self.logger.debug(f"CLIP failed at row {i}: sim={sims[i]:.3f}")
        dataframe = dataframe[keep].reset_index(drop=True)
        storage.write(dataframe)
        return [input_image_key, input_caption_key]


class CLIPScoreFilter(_OperatorBase):
    """DataFlow-MM's CLIPScoreFilter on clipeval: adds `output_score_key` = the raw cosine of
    image and question + answer (NaN when the text is empty or missing, or the image cannot be
    loaded), then writes the rows at or above np.percentile(the non-NaN scores,
    (1 - keep_ratio) * 100) (ties kept, NaN rows dropped). Images may be paths, encoded bytes
    (e.g. from a parquet table) or PIL images. run() returns None, as upstream.

    batch_size: images per forward call (upstream: pairs per batch); the scores do not depend
    on it. Further keyword arguments as ImageCLIPEvaluator's.
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, batch_size: int = 32,
                 keep_ratio: float = 0.8, device: str = None, *, threads=None,
                 precision="fp32", **options):
        self.batch_size = batch_size
        self.keep_ratio = _check_keep_ratio(keep_ratio)
        _attach_model(self, model_name, device, threads, precision, announce=True)
        options.pop("outcome", None)
        self.options = dict(options, batch_size=batch_size, outcome="no similarity, dropped")
        Scorer(self.model, **self.options)  # checks the options now, not at run()

    @staticmethod
    def get_desc(lang: str = "zh") -> str:
        if lang == "zh":
            return "计算图像和文本的CLIP相似度分数"
        return "Compute CLIP similarity scores between images and text"

    def _compute_clip_scores(self, images, questions, texts, labels=None):
        """The raw cosine of each image with question + answer: exactly one float64 per row,
        NaN where the text is empty (a missing part counts as "") or the image fails. The text
        decides first: the image of an empty text is never loaded."""
        n = len(images)
        if not len(questions) == len(texts) == n:
            raise ValueError(f"{n} images, {len(questions)} questions, {len(texts)} answers")
        full = []
        for q, a in zip(questions, texts):
            full.append(("" if _is_missing(q) else str(q)) + ("" if _is_missing(a) else str(a)))
        rows = [i for i in range(n) if full[i] != ""]
        scores = np.full(n, np.nan, dtype=np.float64)
        if rows:
            cos, status = _cosines(
                self.model, [_image_value(images[i]) for i in rows], [full[i] for i in rows],
                self.logger, labels=None if labels is None else [labels[i] for i in rows],
                blank=[False] * len(rows), **self.options)
            scores[rows] = np.where(status == SCORED, cos, np.nan)
        return scores

    def run(self, storage, input_image_key: str = "image", input_question_key: str = "question",
            input_answer_key: str = "answer", output_score_key: str = "clipscore") -> None:
        self.logger.info("Running CLIPScoreEval...")
        dataframe = storage.read("dataframe")
        self.logger.info(f"Loaded {len(dataframe)} rows from storage")
        for key, what in ((input_image_key, "Image"), (input_answer_key, "Text")):
            if key not in dataframe.columns:
                self.logger.error(f"{what} column '{key}' not found")
                raise ValueError(f"Missing required column: {key}")
        if input_question_key not in dataframe.columns:
            raise KeyError(f"column '{input_question_key}' not found (KeyError in DataFlow); "
                           f"columns: {list(dataframe.columns)}")
        self.logger.info("Computing CLIP scores for image-text pairs...")
        clip_scores = self._compute_clip_scores(dataframe[input_image_key].tolist(),
                                                dataframe[input_question_key].tolist(),
                                                dataframe[input_answer_key].tolist(),
                                                labels=list(dataframe.index))
        dataframe[output_score_key] = clip_scores
        self.logger.info(f"Filtering to keep top {self.keep_ratio * 100:.1f}% of samples based "
                         "on CLIP scores...")
        valid_scores = clip_scores[~np.isnan(clip_scores)]
        if len(valid_scores) > 0:
            cut = np.percentile(valid_scores, (1 - self.keep_ratio) * 100)
            filtered_dataframe = dataframe[dataframe[output_score_key] >= cut]
        else:
            self.logger.warning("no row has a CLIP score (every image failed or every text is "
                                "empty): no row is kept")
            filtered_dataframe = dataframe.iloc[0:0]
        storage.write(filtered_dataframe)
