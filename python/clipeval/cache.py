"""The process-wide model cache: one loaded Model per (model, device, threads, precision) and
per process, shared by score_dataframe, the DataFlow operators and every Dask partition that a
worker process runs (a model is loaded once per worker, never once per partition)."""
import os
import threading

from .model import DEFAULT_MODEL, Model

_lock = threading.Lock()
_models = {}
_loads = {"count": 0}


def _key(model, device, threads, precision):
    return (str(os.fspath(model)), "auto" if device is None else str(device),
            None if threads is None else int(threads), precision or "fp32")


def cached_model(model=DEFAULT_MODEL, device="auto", threads=None, precision="fp32"):
    """The process's Model for these settings, loaded on first use."""
    key = _key(model, device, threads, precision)
    with _lock:
        m = _models.get(key)
        if m is None:
            m = Model(key[0], device=key[1], threads=key[2], precision=key[3])
            _models[key] = m
            _loads["count"] += 1
        return m


def model_cache_info():
    """{"loads": models loaded by this process so far, "models": the cached specifications}."""
    with _lock:
        return {"loads": _loads["count"], "pid": os.getpid(), "models": sorted(
            (k[0], k[1], k[2] or 0, k[3]) for k in _models)}


def clear_model_cache():
    """Drops the cached models (each is freed once nothing else refers to it)."""
    with _lock:
        _models.clear()
