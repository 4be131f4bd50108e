"""clipeval: OpenAI CLIP in C99 (libclip.so), from Python.

    import clipeval
    m = clipeval.Model("openai/clip-vit-base-patch32")        # a folder or an HF id
    img = m.encode_images(["cat.jpg", open("dog.png", "rb").read()])   # float32 [2, 512]
    txt = m.encode_texts(["a photo of a cat", "a dog"])
    s = m.score(["cat.jpg"], ["a photo of a cat"])            # DataFlow's clip_score
    df = clipeval.score_dataframe(df, image_key="image", text_key="caption")

clipeval.dataflow.ImageCLIPEvaluator is a drop-in for DataFlow-MM's operator;
clipeval.dask.score(ddf, ...) and the `clipeval-dask` command scale it out on Dask.
"""
from ._lib import ClipError, lib_path
from .cache import cached_model, clear_model_cache, model_cache_info
from .model import DEFAULT_MODEL, Model
from .scoring import (EMPTY_TEXT, IMAGE_FAILED, SCORED, TEXT_TOO_LONG, ClipWarning, Scorer,
                      dataflow_scores, pair_cosines, score_dataframe)

__all__ = ["ClipError", "ClipWarning", "Model", "Scorer", "score_dataframe", "cached_model",
           "clear_model_cache", "model_cache_info", "runtime_info", "library_version",
           "DEFAULT_MODEL", "SCORED", "IMAGE_FAILED", "EMPTY_TEXT", "TEXT_TOO_LONG",
           "dataflow_scores", "pair_cosines", "lib_path"]

__version__ = "0.2.0"


def library_version():
    """The version of the libclip actually loaded."""
    from ._lib import lib
    return lib().clip_version().decode()


def runtime_info():
    """What the CPU side runs on (clip_runtime_info): BLAS, its kernel, threads, CPU features,
    and a warning line when the BLAS kernel choice is slow for this CPU."""
    import ctypes

    from ._lib import clip_runtime_info, lib
    ri = clip_runtime_info()
    lib().clip_runtime_info_get(ctypes.byref(ri))
    out = {}
    for name, _ in ri._fields_:
        v = getattr(ri, name)
        out[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return out
