"""ctypes declarations of libclip.so (src/engine/include/clip.h) and where the library is found.

Every function is called through ctypes.CDLL, which releases the GIL for the duration of each
foreign call: decoding and encoding in several Python threads run in parallel.

The library is searched in this order:
  1. $CLIPEVAL_LIB (a path to libclip.so or libclip.so.0),
  2. next to this package (an installed copy: clipeval/libclip.so.0),
  3. the source tree's build folder (python/clipeval/../../build/libclip.so, after `make`),
  4. the system's loader path (libclip.so.0 after `make install`).
"""
import ctypes
import ctypes.util
import os
import threading

# clip_status (clip.h)
CLIP_OK = 0
STATUS_NAMES = ("CLIP_OK", "CLIP_ERR_ARG", "CLIP_ERR_IO", "CLIP_ERR_FORMAT", "CLIP_ERR_CONFIG",
                "CLIP_ERR_NOMEM", "CLIP_ERR_LIMIT", "CLIP_ERR_UNSUPPORTED", "CLIP_ERR_NOT_FOUND",
                "CLIP_ERR_DEVICE")
CLIP_ERR_ARG, CLIP_ERR_IO, CLIP_ERR_FORMAT, CLIP_ERR_CONFIG, CLIP_ERR_NOMEM = 1, 2, 3, 4, 5
CLIP_ERR_LIMIT, CLIP_ERR_UNSUPPORTED, CLIP_ERR_NOT_FOUND, CLIP_ERR_DEVICE = 6, 7, 8, 9

# clip_device, clip_precision, flags
CLIP_DEVICE_CPU, CLIP_DEVICE_CUDA, CLIP_DEVICE_AUTO = 0, 1, 2
CLIP_EMBED_FEATURES = 1


class ClipError(RuntimeError):
    """An error reported by libclip: `code` is the clip_status value, `status` its name and the
    message is the library's own (it names the file, tensor or row and the reason)."""

    def __init__(self, code, message):
        self.code = int(code)
        self.status = STATUS_NAMES[self.code] if 0 <= self.code < len(STATUS_NAMES) else str(code)
        self.message = message
        super().__init__(message)


class clip_error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("msg", ctypes.c_char * 1024)]


class clip_model_options(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("n_threads", ctypes.c_int), ("precision", ctypes.c_int),
                ("cpu_kernel", ctypes.c_int)]


class clip_model_info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "image_size", "patch_size", "num_channels", "vision_width", "vision_layers",
        "vision_heads", "vision_mlp", "vision_positions", "text_width", "text_layers",
        "text_heads", "text_mlp", "context_length", "vocab_size", "eos_token_id", "embed_dim")] + [
        ("logit_scale", ctypes.c_float), ("dir", ctypes.c_char_p), ("device", ctypes.c_char_p),
        ("precision", ctypes.c_int), ("n_threads", ctypes.c_int), ("cpu_kernel", ctypes.c_char_p)]


TRACE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                            ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int)


class clip_encode_options(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_int), ("trace", TRACE_FN), ("trace_user", ctypes.c_void_p)]


class clip_image_config(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb",
        "shortest_edge", "crop_height", "crop_width", "resample")] + [
        ("rescale_factor", ctypes.c_double), ("mean", ctypes.c_float * 3),
        ("std", ctypes.c_float * 3)]


class clip_decode_options(ctypes.Structure):
    _fields_ = [("exif_transpose", ctypes.c_int), ("max_pixels", ctypes.c_uint64),
                ("max_file_bytes", ctypes.c_uint64), ("pillow_tall_rule", ctypes.c_int)]


class clip_image(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int),
                ("rgb", ctypes.POINTER(ctypes.c_uint8))]


class clip_runtime_info(ctypes.Structure):
    _fields_ = [("blas", ctypes.c_char * 64), ("blas_core", ctypes.c_char * 32)] + [
        (name, ctypes.c_int) for name in ("blas_threads", "omp_threads", "cores", "avx2", "fma",
                                          "avx512f", "avx512bf16")] + [
        ("warning", ctypes.c_char * 320)]


# Structures whose layout tests/python/test_ctypes_layout.py checks against a C compiler.
STRUCTS = {
    "clip_error": clip_error, "clip_model_options": clip_model_options,
    "clip_model_info": clip_model_info, "clip_encode_options": clip_encode_options,
    "clip_image_config": clip_image_config, "clip_decode_options": clip_decode_options,
    "clip_image": clip_image, "clip_runtime_info": clip_runtime_info,
}

_P = ctypes.POINTER
_vp, _int, _sz, _cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p
_err = _P(clip_error)
_status = ctypes.c_int

# name: (restype, argtypes)
_SIGNATURES = {
    "clip_version": (_cs, []),
    "clip_status_name": (_cs, [_int]),
    "clip_precision_name": (_cs, [_int]),
    "clip_precision_parse": (_status, [_cs, _P(_int), _err]),
    "clip_model_options_init": (None, [_P(clip_model_options)]),
    "clip_model_load": (_status, [_cs, _P(clip_model_options), _P(_vp), _err]),
    "clip_model_free": (None, [_vp]),
    "clip_model_get_info": (_P(clip_model_info), [_vp]),
    "clip_encode_images": (_status, [_vp, _vp, _int, _P(clip_encode_options), _vp, _err]),
    "clip_encode_texts": (_status, [_vp, _vp, _int, _int, _P(clip_encode_options), _vp, _err]),
    "clip_text_pool_index": (_int, [_vp, _vp, _int]),
    "clip_runtime_info_get": (None, [_P(clip_runtime_info)]),
    "clip_free": (None, [_vp]),
    "clip_tokenizer_load": (_status, [_cs, _P(_vp), _err]),
    "clip_tokenizer_free": (None, [_vp]),
    "clip_tokenizer_max_length": (_int, [_vp]),
    "clip_tokenizer_vocab_size": (_int, [_vp]),
    "clip_tokenize": (_status, [_vp, _cs, _sz, _int, _int, _vp, _vp, _sz, _P(_sz), _err]),
    "clip_tokenize_batch": (_status, [_vp, _P(_cs), _P(_sz), _int, _int, _vp, _vp, _err]),
    "clip_image_config_load": (_status, [_cs, _P(clip_image_config), _err]),
    "clip_decode_options_init": (None, [_P(clip_decode_options)]),
    "clip_image_free": (None, [_P(clip_image)]),
    "clip_image_decode_file": (_status, [_cs, _P(clip_decode_options), _P(clip_image), _err]),
    "clip_image_decode_memory": (_status, [_vp, _sz, _P(clip_decode_options), _P(clip_image),
                                           _err]),
    "clip_image_preprocess": (_status, [_P(clip_image), _P(clip_image_config),
                                        _P(clip_decode_options), _vp, _P(clip_image), _err]),
    "clip_preprocess_file": (_status, [_cs, _P(clip_image_config), _P(clip_decode_options), _vp,
                                       _err]),
}

_lock = threading.Lock()
_lib = None
_lib_path = None


def _candidates():
    env = os.environ.get("CLIPEVAL_LIB")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [os.path.join(here, "libclip.so.0"), os.path.join(here, "libclip.so"),
             os.path.join(os.path.dirname(os.path.dirname(here)), "build", "libclip.so")]
    found = [p for p in paths if os.path.exists(p)]
    return found + ["libclip.so.0"], False


def lib():
    """The loaded library (loaded on first use)."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        paths, from_env = _candidates()
        errors = []
        for p in paths:
            try:
                handle = ctypes.CDLL(p)
            except OSError as e:
                errors.append(f"{p}: {e}")
                continue
            for name, (res, args) in _SIGNATURES.items():
                fn = getattr(handle, name)
                fn.restype, fn.argtypes = res, args
            _lib_path = p
            _lib = handle
            return _lib
        where = "$CLIPEVAL_LIB" if from_env else "next to the package, in ../build, and " \
            "on the system loader path"
        raise ImportError("clipeval: cannot load libclip.so (looked " + where + "): " +
                          "; ".join(errors) + ". Build it with `make` in the clipeval "
                          "repository, or set CLIPEVAL_LIB=/path/to/libclip.so")


def lib_path():
    lib()
    return _lib_path


def check(status, err):
    """Raises ClipError for a failed call, with the library's message."""
    if status != CLIP_OK:
        msg = err.msg.decode("utf-8", "replace") or lib().clip_status_name(status).decode()
        raise ClipError(status, msg)
