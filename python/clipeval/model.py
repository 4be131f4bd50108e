"""clipeval.Model: a loaded CLIP model (weights, tokenizer, image processor) over libclip.

Images are decoded and preprocessed by the library (Pillow/HF exact) straight into the float32
batch array that is then encoded: no intermediate copies. Every library call releases the GIL.
"""
import ctypes
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _lib
from ._lib import ClipError, check

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

_DEVICES = {"auto": _lib.CLIP_DEVICE_AUTO, "cpu": _lib.CLIP_DEVICE_CPU,
            "cuda": _lib.CLIP_DEVICE_CUDA}
_SURROGATES = re.compile("[\ud800-\udfff]")


def parse_device(device):
    """"auto" (or None), "cpu", "cuda" or "cuda:0" -> clip_device."""
    if device is None:
        return _lib.CLIP_DEVICE_AUTO
    d = str(device).strip().lower()
    if d.startswith("cuda:"):
        # The C API has one CUDA device per process (CUDA_VISIBLE_DEVICES picks it).
        if d[5:] not in ("0", ""):
            raise ClipError(_lib.CLIP_ERR_ARG,
                            f"device '{device}': only cuda:0 is addressable; select another GPU "
                            "with CUDA_VISIBLE_DEVICES")
        d = "cuda"
    if d not in _DEVICES:
        raise ClipError(_lib.CLIP_ERR_ARG, f"device '{device}': expected auto, cpu or cuda")
    return _DEVICES[d]


def parse_precision(precision):
    """"fp32", "bf16", "fp16" -> clip_precision (the library's parser and message)."""
    out = ctypes.c_int(0)
    err = _lib.clip_error()
    name = "fp32" if precision is None else str(precision)
    check(_lib.lib().clip_precision_parse(name.encode(), ctypes.byref(out), ctypes.byref(err)),
          err)
    return out.value


def text_bytes(text):
    """UTF-8 of a str as the CLI reads it from JSON: a lone surrogate becomes U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text).encode("utf-8")


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


class Model:
    """A CLIP model loaded by libclip.

    model:     a folder (config.json + model.safetensors + tokenizer + preprocessor files) or an
               HF model id found in the HF cache, as for the CLI.
    device:    "auto" (CUDA when built with it and usable, else CPU), "cpu" or "cuda".
    threads:   CPU threads of one encode call (None: all cores).
    precision: "fp32" (default). Other precisions raise ClipError (CLIP_ERR_UNSUPPORTED) until
               the engine implements them.
    decode_threads: threads decoding images in parallel (None: all cores).
    exif_transpose, max_pixels, max_file_bytes, pillow_tall_rule: decoding options, as the
               CLI's --exif-transpose, --max-pixels, --max-file-bytes (0 = the library default).
    """

    def __init__(self, model=DEFAULT_MODEL, device="auto", threads=None, precision="fp32", *,
                 decode_threads=None, exif_transpose=False, max_pixels=0, max_file_bytes=0,
                 pillow_tall_rule=False):
        L = _lib.lib()
        self._L = L
        self._m = ctypes.c_void_p()
        self._tok = ctypes.c_void_p()
        self._pool = None
        self._pool_lock = threading.Lock()
        if threads is not None and (int(threads) < 1 or int(threads) > 4096):
            raise ClipError(_lib.CLIP_ERR_ARG, f"threads={threads}: expected 1..4096 or None")
        if decode_threads is not None and int(decode_threads) < 1:
            raise ClipError(_lib.CLIP_ERR_ARG, f"decode_threads={decode_threads}: expected >= 1")
        self.spec = (str(os.fspath(model)), device, threads, precision)
        opt = _lib.clip_model_options()
        L.clip_model_options_init(ctypes.byref(opt))
        opt.device = parse_device(device)
        opt.n_threads = int(threads or 0)
        opt.precision = parse_precision(precision)
        err = _lib.clip_error()
        check(L.clip_model_load(os.fsencode(self.spec[0]), ctypes.byref(opt),
                                ctypes.byref(self._m), ctypes.byref(err)), err)
        try:
            info = L.clip_model_get_info(self._m).contents
            self.info = {name: getattr(info, name) for name, _ in info._fields_}
            for k in ("dir", "device"):
                self.info[k] = self.info[k].decode("utf-8", "surrogateescape")
            self.info["precision"] = L.clip_precision_name(info.precision).decode()
            self.dir = self.info["dir"]
            self.device = self.info["device"]
            self.precision = self.info["precision"]
            self.threads = self.info["n_threads"]
            self.dim = self.info["embed_dim"]
            self.image_size = self.info["image_size"]
            check(L.clip_tokenizer_load(os.fsencode(self.dir), ctypes.byref(self._tok),
                                        ctypes.byref(err)), err)
            self.max_length = min(L.clip_tokenizer_max_length(self._tok),
                                  self.info["context_length"])
            self._icfg = _lib.clip_image_config()
            check(L.clip_image_config_load(os.fsencode(self.dir), ctypes.byref(self._icfg),
                                           ctypes.byref(err)), err)
            S = self.image_size
            if self._icfg.crop_height != S or self._icfg.crop_width != S:
                raise ClipError(_lib.CLIP_ERR_CONFIG,
                                f"{self.dir}: preprocessor crop size {self._icfg.crop_width}x"
                                f"{self._icfg.crop_height} does not match the model's image size "
                                f"{self.image_size}")
        except BaseException:
            self.close()
            raise
        self.decode_threads = int(decode_threads) if decode_threads else (os.cpu_count() or 1)
        self._decode = self.decode_options(exif_transpose=exif_transpose, max_pixels=max_pixels,
                                           max_file_bytes=max_file_bytes,
                                           pillow_tall_rule=pillow_tall_rule)

    # ---------------------------------------------------------------- lifetime

    def close(self):
        """Frees the model now (it is also freed when garbage-collected)."""
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)
        L = getattr(self, "_L", None)
        if L is None:
            return
        if getattr(self, "_tok", None):
            L.clip_tokenizer_free(self._tok)
            self._tok = ctypes.c_void_p()
        if getattr(self, "_m", None):
            L.clip_model_free(self._m)
            self._m = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        # Sent to another process (Dask), a model travels as its specification and is loaded
        # there once per process (the process-wide cache).
        from .cache import cached_model
        return (cached_model, self.spec)

    def __repr__(self):
        return (f"clipeval.Model({self.spec[0]!r}, device={self.device!r}, "
                f"precision={self.precision!r}, threads={self.threads}, dim={self.dim})")

    def _alive(self):
        if not self._m:
            raise ClipError(_lib.CLIP_ERR_ARG, "the model was closed")

    # ---------------------------------------------------------------- images

    def decode_options(self, *, exif_transpose=False, max_pixels=0, max_file_bytes=0,
                       pillow_tall_rule=False):
        """A clip_decode_options struct (0 keeps the library default of a limit)."""
        d = _lib.clip_decode_options()
        self._L.clip_decode_options_init(ctypes.byref(d))
        d.exif_transpose = 1 if exif_transpose else 0
        d.pillow_tall_rule = 1 if pillow_tall_rule else 0
        if max_pixels:
            d.max_pixels = int(max_pixels)
        if max_file_bytes:
            d.max_file_bytes = int(max_file_bytes)
        return d

    def pool(self):
        """The model's image decoding threads (created on first use)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.decode_threads,
                                                thread_name_prefix="clipeval-decode")
            return self._pool

    def preprocess_into(self, image, out, decode=None):
        """Decodes + preprocesses one image into `out` (float32 [3, S, S], C-contiguous).

        image: a path (str / os.PathLike), encoded bytes, or an HxWx3 uint8 array (RGB)."""
        S = self.image_size
        if out.dtype != np.float32 or out.size != 3 * S * S or not out.flags.c_contiguous:
            raise ClipError(_lib.CLIP_ERR_ARG, f"out: expected a C-contiguous float32 array of "
                            f"3 x {S} x {S} values")
        L, err = self._L, _lib.clip_error()
        dopt = decode if decode is not None else self._decode
        cfg = ctypes.byref(self._icfg)
        dst = ctypes.c_void_p(out.ctypes.data)
        if isinstance(image, (str, os.PathLike)):
            path = os.fsencode(image)
            if not path or b"\0" in path:
                raise ClipError(_lib.CLIP_ERR_ARG, "image path is empty" if not path
                                else "image path contains a NUL byte")
            check(L.clip_preprocess_file(path, cfg, ctypes.byref(dopt), dst, ctypes.byref(err)),
                  err)
            return
        if isinstance(image, np.ndarray):
            a = np.ascontiguousarray(_check_array(image))  # a copy only when not C-contiguous
            img = _lib.clip_image(width=a.shape[1], height=a.shape[0],
                                  rgb=a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
            check(L.clip_image_preprocess(ctypes.byref(img), cfg, ctypes.byref(dopt), dst, None,
                                          ctypes.byref(err)), err)
            return
        img = self._decode_raw(image, dopt)
        try:
            check(L.clip_image_preprocess(ctypes.byref(img), cfg, ctypes.byref(dopt), dst, None,
                                          ctypes.byref(err)), err)
        finally:
            L.clip_image_free(ctypes.byref(img))

    def _decode_raw(self, image, dopt):
        """Decodes a path or encoded bytes into a clip_image (the caller frees it)."""
        L, err = self._L, _lib.clip_error()
        img = _lib.clip_image()
        if isinstance(image, (str, os.PathLike)):
            path = os.fsencode(image)
            if not path or b"\0" in path:
                raise ClipError(_lib.CLIP_ERR_ARG, "image path is empty" if not path
                                else "image path contains a NUL byte")
            st = L.clip_image_decode_file(path, ctypes.byref(dopt), ctypes.byref(img),
                                          ctypes.byref(err))
        elif isinstance(image, (bytes, bytearray, memoryview)):
            data = np.frombuffer(image, dtype=np.uint8)  # no copy
            if data.size == 0:
                raise ClipError(_lib.CLIP_ERR_FORMAT, "image data is empty")
            st = L.clip_image_decode_memory(_ptr(data), data.size, ctypes.byref(dopt),
                                            ctypes.byref(img), ctypes.byref(err))
        else:
            raise ClipError(_lib.CLIP_ERR_ARG, f"image of type {type(image).__name__}: expected "
                            "a path or encoded bytes")
        check(st, err)
        return img

    def decode_image(self, image, **decode):
        """The RGB pixels of an image file or encoded bytes (Pillow's convert("RGB")), as a
        uint8 [H, W, 3] array."""
        img = self._decode_raw(image, self.decode_options(**decode) if decode else self._decode)
        try:
            n = img.width * img.height * 3
            return np.ctypeslib.as_array(img.rgb, shape=(n,)).reshape(
                img.height, img.width, 3).copy()
        finally:
            self._L.clip_image_free(ctypes.byref(img))

    def decode_check(self, image, decode=None):
        """Raises ClipError when the image cannot be decoded (no preprocessing)."""
        if isinstance(image, np.ndarray):
            _check_array(image)
            return
        img = self._decode_raw(image, decode if decode is not None else self._decode)
        self._L.clip_image_free(ctypes.byref(img))

    def _preprocess_batch(self, images, px, decode, first_index=0):
        """Preprocesses images into px[:len(images)] in parallel; raises the first failure."""
        if len(images) == 1 or self.decode_threads == 1:
            results = []
            for k, im in enumerate(images):
                results.append(_try(self.preprocess_into, im, px[k], decode))
        else:
            results = list(self.pool().map(lambda k: _try(self.preprocess_into, images[k], px[k],
                                                          decode), range(len(images))))
        for k, e in enumerate(results):
            if e is not None:
                raise ClipError(e.code, f"images[{first_index + k}]: {e.message}")

    def preprocess(self, images, **decode):
        """pixel_values float32 [N, 3, S, S] of images (paths, bytes or uint8 arrays)."""
        self._alive()
        dopt = self.decode_options(**decode) if decode else self._decode
        S = self.image_size
        px = np.empty((len(images), 3, S, S), dtype=np.float32)
        if len(images):
            self._preprocess_batch(list(images), px, dopt)
        return px

    def encode_pixels(self, pixels, features=False, out=None):
        """Embeddings of pixel_values float32 [N, 3, S, S] (a C-contiguous array is used in
        place) -> float32 [N, D]."""
        self._alive()
        S = self.image_size
        px = np.ascontiguousarray(pixels, dtype=np.float32)
        if px.ndim == 3:
            px = px[None]
        if px.ndim != 4 or px.shape[1:] != (3, S, S):
            raise ClipError(_lib.CLIP_ERR_ARG, f"pixel values of shape {pixels.shape}: expected "
                            f"[N, 3, {S}, {S}]")
        n = px.shape[0]
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        if n:
            opt = _lib.clip_encode_options(flags=_lib.CLIP_EMBED_FEATURES if features else 0)
            err = _lib.clip_error()
            check(self._L.clip_encode_images(self._m, _ptr(px), n, ctypes.byref(opt), _ptr(out),
                                             ctypes.byref(err)), err)
        return out

    def encode_images(self, images, features=False, batch_size=None, **decode):
        """L2-normalised image embeddings, float32 [N, D] (features=True: unnormalised).

        images: a list of paths, encoded bytes, or HxWx3 uint8 RGB arrays. They are decoded in
        parallel into one float32 batch and encoded by one library call (batch_size=None, as
        `clipeval embed --images`), or in calls of batch_size images."""
        self._alive()
        images = list(images)
        n = len(images)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        dopt = self.decode_options(**decode) if decode else self._decode
        B = n if batch_size is None else int(batch_size)
        if B < 1:
            raise ClipError(_lib.CLIP_ERR_ARG, f"batch_size={batch_size}: expected >= 1")
        S = self.image_size
        px = np.empty((min(B, n), 3, S, S), dtype=np.float32)
        for i0 in range(0, n, B):
            cnt = min(B, n - i0)
            self._preprocess_batch(images[i0:i0 + cnt], px, dopt, i0)
            self.encode_pixels(px[:cnt], features, out[i0:i0 + cnt])
        return out

    # ---------------------------------------------------------------- texts

    def tokenize(self, texts, out=None):
        """input_ids int32 [N, L] (L = 77: truncated and padded, as the HF processor)."""
        self._alive()
        encoded = [text_bytes(t) if isinstance(t, str) else _text_arg(t) for t in texts]
        n, L = len(encoded), self.max_length
        ids = out if out is not None else np.empty((n, L), dtype=np.int32)
        if n:
            ptrs = (ctypes.c_char_p * n)(*encoded)
            lens = (ctypes.c_size_t * n)(*[len(b) for b in encoded])
            err = _lib.clip_error()
            check(self._L.clip_tokenize_batch(self._tok, ptrs, lens, n, L, _ptr(ids), None,
                                              ctypes.byref(err)), err)
        return ids

    def encode_ids(self, ids, features=False, out=None):
        """Embeddings of token ids int32/int64 [N, L] -> float32 [N, D]."""
        self._alive()
        a = np.asarray(ids)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise ClipError(_lib.CLIP_ERR_ARG, f"token ids of dtype {a.dtype} and shape "
                            f"{a.shape}: expected integers [N, L]")
        a = np.ascontiguousarray(a, dtype=np.int32)
        n, L = a.shape
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        if n:
            opt = _lib.clip_encode_options(flags=_lib.CLIP_EMBED_FEATURES if features else 0)
            err = _lib.clip_error()
            check(self._L.clip_encode_texts(self._m, _ptr(a), n, L, ctypes.byref(opt), _ptr(out),
                                            ctypes.byref(err)), err)
        return out

    def encode_texts(self, texts, features=False, batch_size=None):
        """L2-normalised text embeddings, float32 [N, D] (features=True: unnormalised).
        texts: a list of str (UTF-8 bytes are accepted too); one library call for all of them
        (batch_size=None, as `clipeval embed --texts-file`) or calls of batch_size texts."""
        self._alive()
        texts = list(texts)
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        B = max(n, 1) if batch_size is None else int(batch_size)
        if B < 1:
            raise ClipError(_lib.CLIP_ERR_ARG, f"batch_size={batch_size}: expected >= 1")
        for i0 in range(0, n, B):
            ids = self.tokenize(texts[i0:i0 + B])
            self.encode_ids(ids, features, out[i0:i0 + len(ids)])
        return out

    # ---------------------------------------------------------------- scores

    def score(self, images, texts, **options):
        """DataFlow's score of each (image, text) pair: float64 [N] =
        clamp((float32 dot of the normalised embeddings + 1) / 2, 0, 1); an unreadable image
        scores 0.0 with a warning, an empty or whitespace-only text 0.0. Texts that are not str
        are scored as str(value), as DataFlow does. Distinct images and texts are encoded once.
        options: as score_dataframe (batch_size, warn, image_root, max_text_bytes, ...)."""
        from .scoring import Scorer
        images, texts = list(images), list(texts)
        if len(images) != len(texts):
            raise ClipError(_lib.CLIP_ERR_ARG, f"{len(images)} images but {len(texts)} texts")
        return Scorer(self, **options).score(images, [t if isinstance(t, str) else str(t)
                                                      for t in texts])


def _check_array(a):
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ClipError(_lib.CLIP_ERR_ARG, f"image array of dtype {a.dtype} and shape {a.shape}: "
                        "expected uint8 [H, W, 3] (RGB)")
    return a


def _text_arg(t):
    if isinstance(t, (bytes, bytearray)):
        return bytes(t)
    raise ClipError(_lib.CLIP_ERR_ARG, f"text of type {type(t).__name__}: expected str")


def _try(fn, *args):
    try:
        fn(*args)
        return None
    except ClipError as e:
        return e
