"""The scorer's semantics in Python: `clipeval score` (src/app/scorer.c) row for row.

A run goes window by window (4,096 rows, as the CLI): every distinct image and text of the
window that is not in the embedding caches is decoded/tokenized and encoded in batches (decoding
of batch j+1 overlapping the encoding of batch j), then every row is scored from the cached
embeddings. The caches are LRUs of `cache_entries` distinct images and texts, as the CLI's, so
the batches sent to the engine are the CLI's batches and the scores are the CLI's, bit for bit.

Per row (DataFlow-MM ImageCLIPEvaluator):
  - an image value that is not a usable path (null, missing, not a string, empty) or an image
    that cannot be decoded scores 0.0 with a warning;
  - then empty or whitespace-only text (str.strip()) scores 0.0 without a warning (the image
    was still loaded first, so a bad image warns);
  - a text above max_text_bytes scores 0.0 with a warning;
  - otherwise clamp((v + 1) / 2, 0, 1) where v is the float32 dot product of the L2-normalised
    embeddings (the products summed in double, rounded once to float32, as clip_pair_score).
"""
import os
import time
import warnings
from collections import OrderedDict

import numpy as np

from . import _lib
from ._lib import ClipError
from .model import DEFAULT_MODEL, Model, text_bytes

WINDOW_ROWS = 4096  # as scorer.c

# Per-row outcome (Scorer.pairs)
SCORED, IMAGE_FAILED, EMPTY_TEXT, TEXT_TOO_LONG = 0, 1, 2, 3

# Cache entry states, as scorer.c: PENDING = just inserted; QUEUED = to be encoded in this
# window; CHECKED = decodes, but only blank-text rows needed it so far (no embedding yet).
_PENDING, _QUEUED, _OK, _FAILED, _CHECKED = range(5)


class ClipWarning(UserWarning):
    """A row scored 0.0 because of its data (unreadable image, unusable image value, text above
    the size limit)."""


class _Entry:
    __slots__ = ("state", "slot", "reason", "window", "value")

    def __init__(self, window, value):
        self.state, self.slot, self.reason, self.window, self.value = (_PENDING, -1, None,
                                                                       window, value)


class _Cache:
    """A key -> embedding LRU of `cap` entries; embeddings live in one growing float32 arena."""

    def __init__(self, cap, dim):
        self.cap, self.dim = cap, dim
        self.map = OrderedDict()
        self.arena = np.empty((min(cap, 256), dim), dtype=np.float32)
        self.used = 0
        self.free = []

    def get(self, key, window, value):
        e = self.map.get(key)
        if e is not None:
            self.map.move_to_end(key)
            e.window = window
            return e, False
        if len(self.map) >= self.cap:
            victim_key, victim = next(iter(self.map.items()))
            if victim.window == window:  # cannot happen: cap >= 2 windows
                raise ClipError(_lib.CLIP_ERR_NOMEM, "embedding cache exhausted")
            del self.map[victim_key]
            if victim.slot >= 0:
                self.free.append(victim.slot)
        e = _Entry(window, value)
        self.map[key] = e
        return e, True

    def store(self, entry, vec):
        if entry.slot < 0:
            if self.free:
                entry.slot = self.free.pop()
            else:
                if self.used == len(self.arena):
                    grown = np.empty((min(self.cap, 2 * len(self.arena)), self.dim),
                                     dtype=np.float32)
                    grown[:self.used] = self.arena[:self.used]
                    self.arena = grown
                entry.slot = self.used
                self.used += 1
        self.arena[entry.slot] = vec
        entry.state = _OK


def pair_cosines(img, txt):
    """float32 dot products of paired rows, as Python floats would hold torch's
    float((a * b).sum()): the exact products summed left to right in double (np.cumsum is
    sequential, like clip_pair_score's loop), rounded once to float32."""
    prod = img.astype(np.float64) * txt.astype(np.float64)
    if prod.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    acc = np.cumsum(prod, axis=1)[:, -1]
    return acc.astype(np.float32).astype(np.float64)


def dataflow_scores(cos):
    """clamp((v + 1) / 2, 0, 1) in double; NaN passes through, as Python's min/max let it."""
    s = (np.asarray(cos, dtype=np.float64) + 1.0) / 2.0
    s = np.where(s > 1.0, 1.0, s)
    return np.where(s < 0.0, 0.0, s)


def _is_blank(text):
    return not text or text.strip() == ""


def _label(labels, i):
    return i if labels is None else labels[i]


def _bad_value_kind(v):
    if v is None:
        return "null"
    if isinstance(v, (float, np.floating)) and v != v:
        return "missing"
    if type(v).__name__ in ("NAType", "NaTType"):
        return "missing"
    return "not a string"


class Scorer:
    """Scores (image, text) pairs with a model, keeping the embedding caches across calls.

    batch_size      images per forward call (texts: 8x), default 32 as the CLI
    cache_entries   distinct images (and texts) whose embeddings are kept (default 65,536)
    image_root      relative image paths are resolved against it (default: the current dir)
    max_text_bytes  longer texts (UTF-8) score 0.0 with a warning (0: 64 MiB)
    warn            called with each warning's text (default: warnings.warn(ClipWarning))
    outcome         what a failed row gets, as the warnings say it (default "score 0.0"; the
                    filters: "similarity 0.0", "no similarity, dropped")
    exif_transpose, max_pixels, max_file_bytes, pillow_tall_rule: decoding, as the CLI
    stats           counters of everything scored so far (rows, scored, image_failed, ...)
    """

    def __init__(self, model, *, batch_size=32, cache_entries=65536, image_root=None,
                 max_text_bytes=0, warn=None, exif_transpose=False, max_pixels=0,
                 max_file_bytes=0, pillow_tall_rule=False, outcome="score 0.0"):
        if not isinstance(model, Model):
            raise TypeError(f"model: expected a clipeval.Model, got {type(model).__name__}")
        if not 1 <= int(batch_size) <= 4096:
            raise ClipError(_lib.CLIP_ERR_ARG, f"batch size {batch_size} is out of range "
                            "[1, 4096]")
        if int(cache_entries) < 1:
            raise ClipError(_lib.CLIP_ERR_ARG, f"cache_entries={cache_entries}: expected >= 1")
        self.model = model
        self.batch_size = int(batch_size)
        self.image_root = None if image_root is None else os.fspath(image_root)
        self.max_text_bytes = int(max_text_bytes) if max_text_bytes else 64 << 20
        self.warn = warn if warn is not None else _default_warn
        self.outcome = str(outcome)
        self.decode = model.decode_options(exif_transpose=exif_transpose, max_pixels=max_pixels,
                                           max_file_bytes=max_file_bytes,
                                           pillow_tall_rule=pillow_tall_rule)
        cap = max(int(cache_entries), 2 * WINDOW_ROWS)
        self.images = _Cache(cap, model.dim)
        self.texts = _Cache(cap, model.dim)
        self.window = 0
        self.stats = {"rows": 0, "scored": 0, "image_failed": 0, "text_failed": 0,
                      "empty_text": 0, "images_encoded": 0, "texts_encoded": 0, "seconds": 0.0}

    # ---------------------------------------------------------------- public

    def score(self, images, texts, labels=None):
        """DataFlow scores float64 [N]; texts must be str (score_dataframe applies str())."""
        cos, status = self.pairs(images, texts, labels)
        return np.where(status == SCORED, dataflow_scores(cos), 0.0)

    def pairs(self, images, texts, labels=None, blank=None, check_blank_images=True):
        """The raw material of every CLIP operator: (cos float64 [N], status int8 [N]).

        cos is the float32 dot of the normalised embeddings where status == SCORED, else NaN.
        blank: an optional sequence of bools, True where the row's text counts as missing (the
        default rule is DataFlow's evaluator: empty or whitespace-only). check_blank_images:
        decode the image of a blank-text row anyway, so that a bad image warns (the evaluator
        loads the image first)."""
        n = len(images)
        if len(texts) != n:
            raise ClipError(_lib.CLIP_ERR_ARG, f"{n} images but {len(texts)} texts")
        cos = np.full(n, np.nan, dtype=np.float64)
        status = np.zeros(n, dtype=np.int8)
        t0 = time.monotonic()
        for w0 in range(0, n, WINDOW_ROWS):
            w1 = min(n, w0 + WINDOW_ROWS)
            self._window(images, texts, labels, blank, check_blank_images, w0, w1, cos, status)
        self.stats["seconds"] += time.monotonic() - t0
        return cos, status

    # ---------------------------------------------------------------- one window

    def _image_key(self, v):
        """(cache key, value to decode) or (None, reason)."""
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        if isinstance(v, str):
            if not v:
                return None, "image path is empty"
            if "\0" in v:
                return None, "image path contains a NUL byte"
            if self.image_root and not v.startswith("/"):
                v = self.image_root + ("" if self.image_root.endswith("/") else "/") + v
            return v, v
        if isinstance(v, (bytes, bytearray, memoryview)):
            b = bytes(v)
            if not b:
                return None, "image data is empty"
            return ("bytes", b), b
        if isinstance(v, np.ndarray):
            return ("array", object()), v  # never shared: arrays are not hashable
        return None, f"image value is {_bad_value_kind(v)}, not a path"

    def _window(self, images, texts, labels, blank, check_blank_images, w0, w1, cos, status):
        self.window += 1
        window = self.window
        n = w1 - w0
        row_img = [None] * n      # image entry, or the reason the value is unusable (str)
        row_txt = [None] * n
        row_state = [SCORED] * n  # SCORED, EMPTY_TEXT or TEXT_TOO_LONG before images are known
        new_img, chk_img, new_txt = [], [], []
        max_text = self.max_text_bytes
        for k in range(n):
            i = w0 + k
            text = texts[i]
            is_blank = _is_blank(text) if blank is None else bool(blank[i])
            if not is_blank and len(text) * 4 > max_text and len(text_bytes(text)) > max_text:
                row_state[k] = TEXT_TOO_LONG
                is_blank = True
            elif is_blank:
                row_state[k] = EMPTY_TEXT
            key, value = self._image_key(images[i])
            if key is None:
                row_img[k] = value
                continue
            e, inserted = self.images.get(key, window, value)
            row_img[k] = e
            if is_blank:
                if inserted and check_blank_images:
                    chk_img.append(e)
            elif e.state in (_PENDING, _CHECKED):
                e.state = _QUEUED
                new_img.append(e)
            if not is_blank:
                t, inserted = self.texts.get(text, window, text)
                row_txt[k] = t
                if inserted:
                    new_txt.append(t)
        chk_img = [e for e in chk_img if e.state == _PENDING]
        if new_img:
            self._encode_images(new_img)
        if chk_img:
            self._check_images(chk_img)
        if new_txt:
            self._encode_texts(new_txt)
        # scores, row by row (warnings in row order, as the CLI)
        st = self.stats
        ok_rows, ok_img, ok_txt = [], [], []
        for k in range(n):
            i = w0 + k
            e = row_img[k]
            if isinstance(e, str):
                self.warn(f"row {_label(labels, i)}: cannot score: {e} ({self.outcome})")
                st["image_failed"] += 1
                status[i] = IMAGE_FAILED
            elif e is not None and e.state == _FAILED:
                self.warn(f"row {_label(labels, i)}: failed to load image {e.reason} "
                          f"({self.outcome})")
                st["image_failed"] += 1
                status[i] = IMAGE_FAILED
            elif row_state[k] == TEXT_TOO_LONG:
                nbytes = len(text_bytes(texts[i]))
                self.warn(f"row {_label(labels, i)}: text of {nbytes} bytes is above the "
                          f"max_text_bytes limit ({self.outcome})")
                st["text_failed"] += 1
                status[i] = TEXT_TOO_LONG
            elif row_state[k] == EMPTY_TEXT:
                st["empty_text"] += 1
                status[i] = EMPTY_TEXT
            else:
                st["scored"] += 1
                ok_rows.append(i)
                ok_img.append(e.slot)
                ok_txt.append(row_txt[k].slot)
        if ok_rows:
            cos[ok_rows] = pair_cosines(self.images.arena[ok_img], self.texts.arena[ok_txt])
        st["rows"] += n

    # ---------------------------------------------------------------- encoding

    def _submit(self, entries, px):
        pool, m, d = self.model.pool(), self.model, self.decode
        return [pool.submit(_decode_one, m, e.value, px[k], d) for k, e in enumerate(entries)]

    def _encode_images(self, entries):
        """Batches of batch_size: batch b+1 decodes (threads) while batch b is encoded."""
        B, S = self.batch_size, self.model.image_size
        bufs = [np.empty((min(B, len(entries)), 3, S, S), dtype=np.float32) for _ in range(2)]
        batches = [entries[i:i + B] for i in range(0, len(entries), B)]
        pending = self._submit(batches[0], bufs[0])
        for b, batch in enumerate(batches):
            futures = pending
            errors = [f.result() for f in futures]
            if b + 1 < len(batches):
                pending = self._submit(batches[b + 1], bufs[(b + 1) % 2])
            px = bufs[b % 2]
            ok = [k for k, err in enumerate(errors) if err is None]
            for k, err in enumerate(errors):
                if err is not None:
                    batch[k].state = _FAILED
                    batch[k].reason = err.message
            if not ok:
                continue
            pix = px[:len(batch)] if len(ok) == len(batch) else px[ok]
            emb = self.model.encode_pixels(pix)
            for j, k in enumerate(ok):
                self.images.store(batch[k], emb[j])
            self.stats["images_encoded"] += len(ok)

    def _check_images(self, entries):
        """Decodes (without encoding) images of blank-text rows: DataFlow loads the image
        before it looks at the text, so a bad image still gets its warning there."""
        pool, m, d = self.model.pool(), self.model, self.decode
        futures = [pool.submit(_check_one, m, e.value, d) for e in entries]
        for e, f in zip(entries, futures):
            err = f.result()
            if err is None:
                e.state = _CHECKED
            else:
                e.state = _FAILED
                e.reason = err.message

    def _encode_texts(self, entries):
        B = self.batch_size * 8  # texts are ~10x cheaper than images
        for i0 in range(0, len(entries), B):
            batch = entries[i0:i0 + B]
            emb = self.model.encode_texts([e.value for e in batch])
            for j, e in enumerate(batch):
                self.texts.store(e, emb[j])
            self.stats["texts_encoded"] += len(batch)


def _decode_one(model, value, out, decode):
    try:
        model.preprocess_into(value, out, decode)
        return None
    except ClipError as e:
        return e


def _check_one(model, value, decode):
    try:
        model.decode_check(value, decode)
        return None
    except ClipError as e:
        return e


def _default_warn(msg):
    warnings.warn(msg, ClipWarning, stacklevel=3)


# -------------------------------------------------------------------- DataFrames

_MODEL_KEYS = ("device", "threads", "precision")


def resolve_model(model=DEFAULT_MODEL, device="auto", threads=None, precision="fp32"):
    """A Model as given, or the process's cached Model for a folder / HF id."""
    if isinstance(model, Model):
        return model
    from .cache import cached_model
    return cached_model(model, device=device, threads=threads, precision=precision)


def column_values(df, key, w0, w1):
    """Rows w0..w1 of column `key` exactly as DataFlow's `row[key]` sees them through
    df.iterrows() (whose rows are taken from df.values, in the frame's common dtype)."""
    if key not in df.columns:
        raise KeyError(f"column '{key}' not found (KeyError in DataFlow); columns: "
                       f"{list(df.columns)}")
    pos = df.columns.get_loc(key)
    if not isinstance(pos, int):
        raise ValueError(f"column '{key}' appears more than once")
    col = df.iloc[:, pos]
    if col.dtype == object:
        return col.values[w0:w1]  # the very objects iterrows() hands out
    return df.iloc[w0:w1].values[:, pos]


def score_dataframe(df, model=DEFAULT_MODEL, image_key="image_path", text_key="text",
                    output_key="clip_score", *, inplace=False, scorer=None, **options):
    """`clipeval score` on a pandas DataFrame: returns the frame with `output_key` (float64)
    added, or replaced in place when it exists.

    model: a clipeval.Model, or a folder / HF model id (loaded once per process and cached;
           device=, threads=, precision= apply to it).
    options: batch_size, cache_entries, image_root, max_text_bytes, warn, exif_transpose,
             max_pixels, max_file_bytes, pillow_tall_rule (see Scorer).
    The text is str() of each value as pandas holds it; an unreadable image scores 0.0 with a
    warning; empty text 0.0; distinct images and texts are encoded once, in batches.
    inplace=True adds the column to `df` itself (as DataFlow's operator does)."""
    mopts = {k: options.pop(k) for k in _MODEL_KEYS if k in options}
    for k in (image_key, text_key):
        if k not in df.columns:
            raise KeyError(f"column '{k}' not found (KeyError in DataFlow); columns: "
                           f"{list(df.columns)}")
    if scorer is None:
        scorer = Scorer(resolve_model(model, **mopts), **options)
    elif options or mopts:
        raise TypeError("give either scorer= or scoring options, not both")
    n = len(df)
    scores = np.zeros(n, dtype=np.float64)
    labels = df.index
    for w0 in range(0, n, WINDOW_ROWS):
        w1 = min(n, w0 + WINDOW_ROWS)
        images = column_values(df, image_key, w0, w1)
        texts = [str(v) for v in column_values(df, text_key, w0, w1)]
        scores[w0:w1] = scorer.score(images, texts, labels[w0:w1])
    out = df if inplace else df.copy()
    out[output_key] = scores if n else []
    return out
