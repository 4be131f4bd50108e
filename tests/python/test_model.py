"""clipeval.Model: the ctypes layer, bytes-equal to `clipeval embed`, tokenizer ids, errors."""
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import clipeval
from clipeval import _lib
from conftest import run_cli, shared_file


def test_version_matches_library():
    assert clipeval.__version__ == clipeval.library_version()
    info = clipeval.runtime_info()
    assert info["cores"] >= 1 and info["blas"]


def test_ctypes_layout_matches_clip_h(tmp_path):
    """Every ctypes Structure has the size and field offsets of clip.h (compiled here)."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src", "engine", "include")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "clip.h"', 'int main(void) {']
    for name, cls in _lib.STRUCTS.items():
        lines.append(f'printf("{name} %zu\\n", sizeof({name}));')
        for field, _ in cls._fields_:
            lines.append(f'printf("{name}.{field} %zu\\n", offsetof({name}, {field}));')
    lines.append("return 0; }")
    (tmp_path / "layout.c").write_text("\n".join(lines))
    exe = tmp_path / "layout"
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-std=c99", "-I", src, str(tmp_path / "layout.c"), "-o", str(exe)],
                   check=True)
    want = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True,
                                                        text=True, check=True).stdout.splitlines())
    for name, cls in _lib.STRUCTS.items():
        assert int(want[name]) == __import__("ctypes").sizeof(cls), name
        for field, _ in cls._fields_:
            assert int(want[f"{name}.{field}"]) == getattr(cls, field).offset, f"{name}.{field}"


@pytest.fixture(scope="module")
def synth(synth_model):
    m = clipeval.Model(synth_model, device="cpu")
    yield m
    m.close()


def test_model_info(synth, synth_model):
    assert synth.dim == 512 and synth.image_size == 224 and synth.max_length == 77
    assert os.path.realpath(synth.dir) == os.path.realpath(synth_model)
    assert synth.device == "cpu" and synth.precision == "fp32"
    assert synth.info["vision_layers"] == 12
    assert "vitb32-synth" in repr(synth)


def test_34_golden_images_same_bytes_as_cli_embed(synth, synth_model, golden_images,
                                                  clipeval_bin, tmp_path):
    """import clipeval, embed the 34 golden images: the very bytes of `clipeval embed`."""
    assert len(golden_images) == 34
    out = tmp_path / "cli.npy"
    run_cli(clipeval_bin, "embed", "--model", synth_model, "--device", "cpu", "--images",
            *golden_images, "--out", str(out))
    cli = np.load(out)
    got = synth.encode_images(golden_images)
    assert got.dtype == np.float32 and got.shape == (34, 512) and got.flags.c_contiguous
    diff = np.abs(got.astype(np.float64) - cli).max()
    print(f"34 golden images: max |python - cli| = {diff:.3g}, bytes equal: "
          f"{got.tobytes() == cli.tobytes()}")
    assert got.tobytes() == cli.tobytes()
    norms = np.linalg.norm(got.astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < 1e-5


def test_images_as_paths_bytes_arrays_and_features(synth, synth_model, golden_images,
                                                   clipeval_bin, tmp_path):
    files = golden_images[:4]
    by_path = synth.encode_images(files)
    by_bytes = synth.encode_images([open(f, "rb").read() for f in files])
    by_array = synth.encode_images([synth.decode_image(f) for f in files])
    assert by_bytes.tobytes() == by_path.tobytes()
    assert by_array.tobytes() == by_path.tobytes()
    # a non-contiguous array (a view) is accepted too
    rgb = synth.decode_image(files[0])
    wide = np.zeros((rgb.shape[0], rgb.shape[1], 4), np.uint8)
    wide[..., :3] = rgb
    assert synth.encode_images([wide[..., :3]]).tobytes() == synth.encode_images(
        [rgb]).tobytes()
    out = tmp_path / "features.npy"
    run_cli(clipeval_bin, "embed", "--model", synth_model, "--device", "cpu", "--features",
            "--images", *files, "--out", str(out))
    feats = synth.encode_images(files, features=True)
    assert feats.tobytes() == np.load(out).tobytes()
    assert np.abs(np.linalg.norm(feats, axis=1) - 1).max() > 0.1  # not normalised
    # pixel_values equal the golden ones bit for bit
    golden_px = np.load(os.path.join(os.path.dirname(files[0]), "0.pixel_values.npy"))
    assert synth.preprocess(files[:1])[0].tobytes() == golden_px.tobytes()


def test_batch_size_splits_calls(synth, golden_images):
    files = golden_images[:5]
    whole = synth.encode_images(files)
    split = synth.encode_images(files, batch_size=2)
    diff = np.abs(whole.astype(np.float64) - split).max()
    print(f"batch 5 vs batches of 2: max diff {diff:.3g}")
    assert diff <= 1e-6


def _golden_texts(shared):
    return [json.loads(line) for line in open(shared_file(shared, "golden/tokenizer/texts.jsonl"))]


def test_tokenize_equals_golden_ids(synth, shared):
    rows = _golden_texts(shared)
    ids = synth.tokenize([bytes.fromhex(r["utf8_hex"]) for r in rows])
    want = np.array([r["input_ids"] for r in rows], dtype=np.int32)
    assert ids.shape == want.shape
    bad = [r["id"] for r, a, b in zip(rows, ids, want) if not np.array_equal(a, b)]
    print(f"{len(rows)} golden texts tokenized, {len(bad)} mismatches")
    assert not bad
    # str input: the same ids as its UTF-8
    assert np.array_equal(synth.tokenize([rows[0]["text"]]), want[:1])


def test_texts_same_bytes_as_cli_embed(synth, synth_model, shared, clipeval_bin, tmp_path):
    rows = [r for r in _golden_texts(shared)
            if r["text"].encode("utf-8", "surrogatepass") == bytes.fromhex(r["utf8_hex"])][:48]
    f = tmp_path / "texts.jsonl"
    f.write_text("".join(json.dumps(r["text"]) + "\n" for r in rows))
    for features in (False, True):
        out = tmp_path / f"t{int(features)}.npy"
        run_cli(clipeval_bin, "embed", "--model", synth_model, "--device", "cpu",
                "--texts-file", str(f), "--out", str(out), *(["--features"] if features else []))
        got = synth.encode_texts([r["text"] for r in rows], features=features)
        assert got.tobytes() == np.load(out).tobytes(), f"features={features}"
    print(f"{len(rows)} golden texts: bytes equal to clipeval embed --texts-file")


def test_text_lone_surrogate_is_replacement_char(synth):
    a = synth.tokenize(["a\ud800b"])
    b = synth.tokenize(["a\ufffdb"])
    assert np.array_equal(a, b)


def test_errors(synth, synth_model, tmp_path):
    with pytest.raises(clipeval.ClipError) as e:
        clipeval.Model(str(tmp_path / "nope"))
    assert e.value.status == "CLIP_ERR_NOT_FOUND" and "nope" in str(e.value)
    with pytest.raises(clipeval.ClipError) as e:
        clipeval.Model(synth_model, precision="fp8")
    assert e.value.code == _lib.CLIP_ERR_ARG and "fp8" in str(e.value)
    with pytest.raises(clipeval.ClipError) as e:
        clipeval.Model(synth_model, device="tpu")
    assert e.value.code == _lib.CLIP_ERR_ARG
    with pytest.raises(clipeval.ClipError) as e:
        clipeval.Model(synth_model, device="cuda:1")
    assert "CUDA_VISIBLE_DEVICES" in str(e.value)
    with pytest.raises(clipeval.ClipError):
        clipeval.Model(synth_model, threads=0)
    # images: the failing index and the library's message
    with pytest.raises(clipeval.ClipError) as e:
        synth.encode_images([os.path.join(synth_model, "config.json"), str(tmp_path / "x.png")])
    assert str(e.value).startswith("images[0]: ") and "config.json" in str(e.value)
    with pytest.raises(clipeval.ClipError) as e:
        synth.encode_images([str(tmp_path / "missing.png")])
    assert e.value.status == "CLIP_ERR_NOT_FOUND" and "missing.png" in str(e.value)
    with pytest.raises(clipeval.ClipError, match="uint8"):
        synth.encode_images([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(clipeval.ClipError, match="image data is empty"):
        synth.encode_images([b""])
    with pytest.raises(clipeval.ClipError, match="expected a path"):
        synth.encode_images([42])
    with pytest.raises(clipeval.ClipError, match="NUL"):
        synth.encode_images(["a\0b"])
    with pytest.raises(clipeval.ClipError, match="batch_size"):
        synth.encode_images(["x"], batch_size=-1)
    with pytest.raises(clipeval.ClipError, match="expected str"):
        synth.encode_texts([5])
    with pytest.raises(clipeval.ClipError, match=r"\[N, 3, 224, 224\]"):
        synth.encode_pixels(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(clipeval.ClipError, match="expected integers"):
        synth.encode_ids(np.zeros((1, 77), np.float32))
    with pytest.raises(clipeval.ClipError) as e:  # the engine's own range check
        synth.encode_ids(np.full((1, 77), 10 ** 6))
    print("engine error:", e.value)
    assert synth.encode_images([]).shape == (0, 512)
    assert synth.encode_texts([]).shape == (0, 512)


def test_more_error_paths(synth, shared, tmp_path):
    # weights whose image size (32) does not match the preprocessor's crop (224)
    d = tmp_path / "mismatch"
    d.mkdir()
    tiny = os.path.join(shared, "golden", "models", "tiny-synth")
    for f in ("model.safetensors", "config.json"):
        os.symlink(os.path.join(tiny, f), d / f)
    tok = os.path.join(shared, "models", "clip-vit-base-patch32")
    for f in os.listdir(tok):
        if f.endswith((".json", ".txt")) and f != "config.json":
            os.symlink(os.path.join(tok, f), d / f)
    with pytest.raises(clipeval.ClipError) as e:
        clipeval.Model(str(d))
    assert e.value.status == "CLIP_ERR_CONFIG" and "crop size 224x224" in str(e.value)
    with pytest.raises(clipeval.ClipError, match="decode_threads"):
        clipeval.Model(str(d), decode_threads=0)
    with pytest.raises(clipeval.ClipError, match="C-contiguous float32"):
        synth.preprocess_into(os.path.join(shared, "golden", "images", "cake.jpg"),
                              np.empty((3, 224, 223), np.float32))
    with pytest.raises(TypeError, match="clipeval.Model"):
        clipeval.Scorer("not a model")
    with pytest.raises(clipeval.ClipError, match="cache_entries"):
        clipeval.Scorer(synth, cache_entries=0)


def test_library_not_found_is_a_clear_import_error(tmp_path):
    env = dict(os.environ, CLIPEVAL_LIB=str(tmp_path / "libnope.so"))
    r = subprocess.run([sys.executable, "-c", "import clipeval; clipeval.lib_path()"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "cannot load libclip.so (looked $CLIPEVAL_LIB)" in r.stderr and "make" in r.stderr


def test_precision_not_fp32_is_unsupported_for_now(synth_model):
    """bf16/fp16 are parsed, then refused by the engine at load (CLIP_ERR_UNSUPPORTED) until it
    implements them; the library's message comes through."""
    for p in ("bf16", "fp16"):
        try:
            m = clipeval.Model(synth_model, device="cpu", precision=p)
        except clipeval.ClipError as e:
            assert e.status in ("CLIP_ERR_UNSUPPORTED", "CLIP_ERR_DEVICE"), e.status
            assert e.message
            print(f"precision={p}: {e.status}: {e.message}")
        else:  # the engine gained it: then the model reports it
            assert m.precision == p
            m.close()


def test_closed_model_raises(synth_model):
    m = clipeval.Model(synth_model, device="cpu", threads=1)
    m.close()
    m.close()  # idempotent
    with pytest.raises(clipeval.ClipError, match="closed"):
        m.encode_texts(["a"])
    with clipeval.Model(synth_model, device="cpu", threads=1) as m2:
        assert m2.encode_texts(["a"]).shape == (1, 512)
    with pytest.raises(clipeval.ClipError, match="closed"):
        m2.encode_texts(["a"])


def test_pickles_as_its_specification(synth_model):
    clipeval.clear_model_cache()
    m = clipeval.cached_model(synth_model, device="cpu", threads=1)
    assert clipeval.cached_model(synth_model, device="cpu", threads=1) is m
    m2 = pickle.loads(pickle.dumps(m))
    assert m2 is m  # same process: the cached model itself
    info = clipeval.model_cache_info()
    assert len(info["models"]) == 1
    clipeval.clear_model_cache()


def test_gil_is_released_during_library_calls(synth_model, golden_images, tmp_path):
    """A thread blocked inside the library (opening a FIFO, in C) must not stop the main
    thread: the main thread writes the image into that FIFO from Python. Were the GIL held,
    this would deadlock (the subprocess has a time bound; nothing here depends on timing)."""
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    script = textwrap.dedent(f"""
        import threading, numpy as np, clipeval
        m = clipeval.Model({synth_model!r}, device="cpu", threads=1)
        res = {{}}
        t = threading.Thread(target=lambda: res.update(e=m.encode_images([{str(fifo)!r}])))
        t.start()
        with open({str(fifo)!r}, "wb") as f:   # blocks until the library opened the FIFO
            f.write(open({golden_images[0]!r}, "rb").read())
        t.join()
        want = m.encode_images([{golden_images[0]!r}])
        assert res["e"].tobytes() == want.tobytes()
        print("overlap ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "overlap ok" in r.stdout, r.stderr
