"""clipeval.dataflow.ImageClipFilter and CLIPScoreFilter against DataFlow-MM's own FileStorage
and pipeline script (verbatim in ../shared/dataflow-mm, through the `dataflow` shim), the fp64
goldens, numpy's percentile, and `clipeval filter` (the CLI keeps the very same rows)."""
import ast
import inspect
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, shared_file

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(HERE, "dataflow_shim")
PYDIR = os.path.join(HERE, "..", "..", "python")
FILTER_DIR = "dataflow-mm/dataflow/operators/core_vision/filter"
PIPELINE = "dataflow-mm/dataflow/statics/pipelines/gpu_pipelines/image_filter_clip.py"


@pytest.fixture(scope="module")
def FileStorage(shared):
    """Upstream's FileStorage (imports the shim's `dataflow` into this process)."""
    shared_file(shared, "dataflow-mm/dataflow/utils/storage.py")
    os.environ.setdefault("CLIPEVAL_SHARED", shared)
    if SHIM not in sys.path:
        sys.path.insert(0, SHIM)
    from dataflow.utils.storage import FileStorage
    return FileStorage


@pytest.fixture
def images(shared, tmp_path):
    """Two images the tiny model tells apart, copied into tmp_path (the cwd)."""
    for src, dst in (("edge_100x60.png", "a.png"), ("cake.jpg", "b.jpg")):
        data = open(shared_file(shared, f"golden/images/{src}"), "rb").read()
        (tmp_path / dst).write_bytes(data)
    return tmp_path


def golden_rows(shared, name):
    return json.load(open(shared_file(shared, f"golden/scores/{name}.scores.json")))["rows"]


def scores_out(path):
    return [json.loads(line) for line in open(path)]


def numpy_cut(values, keep_ratio):
    v = np.array(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return np.percentile(v, (1 - keep_ratio) * 100) if len(v) else None


# ------------------------------------------------------------------ the upstream pipeline

def test_upstream_pipeline_runs_unchanged_and_keeps_the_cli_rows(shared, synth_model,
                                                                 clipeval_bin, tmp_path):
    """image_filter_clip.py, verbatim, with clipeval's ImageClipFilter in place of the torch one:
    the same bytes as `clipeval filter --mode threshold --pandas-compat`, whose rows are checked
    against the goldens in test_filter.c. edge_rows has upstream's crash cases (null and absent
    captions) and a caption over 77 tokens (upstream's padding=True without truncation fails)."""
    script = shared_file(shared, PIPELINE)
    golden = os.path.join(shared, "golden")
    inp = shared_file(shared, "golden/scores/edge_rows.input.jsonl")
    cache_py, result = tmp_path / "cache_py", tmp_path / "py" / "result.jsonl"
    env = dict(os.environ, CLIPEVAL_SHARED=shared,
               PYTHONPATH=os.pathsep.join([SHIM, PYDIR, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, script, "--input_file", inp, "--output_file", str(result),
                        "--cache_path", str(cache_py), "--model_name", synth_model,
                        "--threshold", "0.04"], cwd=golden, capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "ImageClipFilter result saved to" in r.stdout
    assert "Empty text for image: images/0.png" in r.stderr
    cache_cli = tmp_path / "cache_cli"
    run_cli(clipeval_bin, "filter", "--mode", "threshold", "--threshold", "0.04",
            "--first-entry-file", inp, "--cache-path", str(cache_cli), "--file-name-prefix",
            "imgtext_clip_step", "--model", synth_model, "--pandas-compat", "--quiet",
            cwd=golden)
    cli = (cache_cli / "imgtext_clip_step_step1.jsonl").read_bytes()
    rows = golden_rows(shared, "edge_rows")
    assert 5 <= cli.count(b"\n") < len(rows)
    for produced in (cache_py / "imgtext_clip_step_step1.jsonl", result):
        got = produced.read_bytes()
        kept = got.count(b"\n")
        print(f"{produced.name}: {kept} of {len(rows)} rows kept, "
              f"bytes identical to the CLI: {got == cli}")
        assert got == cli


# ------------------------------------------------------------------ the same interface

def _upstream_functions(shared, file, cls_name):
    path = shared_file(shared, f"{FILTER_DIR}/{file}")
    tree = ast.parse(open(path, encoding="utf-8").read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    return path, {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("file,name", [("image_clip_filter.py", "ImageClipFilter"),
                                       ("clipscore_filter.py", "CLIPScoreFilter")])
def test_signatures_defaults_and_descriptions_match_upstream(shared, file, name):
    import clipeval.dataflow as d
    ours = getattr(d, name)
    path, fns = _upstream_functions(shared, file, name)
    for fn in ("__init__", "run"):
        a = fns[fn].args
        names = [x.arg for x in a.args]
        defaults = {}
        for arg, default in zip(names[len(names) - len(a.defaults):], a.defaults):
            try:
                defaults[arg] = ast.literal_eval(default)
            except ValueError:  # device = "cuda" if torch.cuda.is_available() else "cpu"
                defaults[arg] = "<auto>"
        params = [p for p in inspect.signature(getattr(ours, fn)).parameters.values()
                  if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in params] == names, fn
        for p in params:
            if p.name in defaults:
                want = None if defaults[p.name] == "<auto>" else defaults[p.name]
                assert p.default == want, (fn, p.name)
    fns["get_desc"].decorator_list = []
    ns = {}
    exec(compile(ast.Module(body=[fns["get_desc"]], type_ignores=[]), path, "exec"), ns)
    for lang in ("zh", "en"):
        assert ours.get_desc(lang) == ns["get_desc"](lang)
    assert ours.get_desc() == ns["get_desc"]()
    for extra in ("compute_similarity", "is_consistent", "_compute_clip_scores"):
        assert (extra in fns) == hasattr(ours, extra), extra


# ------------------------------------------------------------------ goldens

def test_golden_similarities_and_cli_keep_ratio_rows(FileStorage, shared, synth_model,
                                                     clipeval_bin, tmp_path, monkeypatch):
    """dataflow_example (18 rows, fp64 goldens): ImageClipFilter's similarity is
    clamp(2 score_f64 - 1, 0, 1); CLIPScoreFilter, with each caption split into question +
    answer, gets the raw 2 score_f64 - 1 and keeps numpy's rows; `clipeval filter --mode
    keep-ratio` writes the same bytes."""
    from clipeval.dataflow import CLIPScoreFilter, ImageClipFilter
    golden = os.path.join(shared, "golden")
    monkeypatch.chdir(golden)
    rows = golden_rows(shared, "dataflow_example")
    want = np.array([2 * r["score_f64"] - 1 for r in rows])
    df = pd.read_json(shared_file(shared, "golden/scores/dataflow_example.input.jsonl"),
                      lines=True)
    f = ImageClipFilter(model_name=synth_model, device="cpu")
    sim = f._similarities(list(df["image"]), list(df["caption"]))
    worst_sim = float(np.abs(sim - np.clip(want, 0, 1)).max())
    assert worst_sim <= 2e-6
    split = [c.index(" ") + 1 for c in df["caption"]]
    qa = pd.DataFrame({"image": df["image"], "q": [c[:k] for c, k in zip(df["caption"], split)],
                       "a": [c[k:] for c, k in zip(df["caption"], split)]})
    inp = tmp_path / "qa.jsonl"
    qa.to_json(inp, orient="records", lines=True, force_ascii=False)
    storage = FileStorage(first_entry_file_name=str(inp), cache_path=str(tmp_path / "c"),
                          file_name_prefix="qa")
    op = CLIPScoreFilter(model_name=synth_model, keep_ratio=0.6, device="cpu")
    assert op.run(storage.step(), input_question_key="q", input_answer_key="a") is None
    out = storage.step().read("dataframe")
    raw = op._compute_clip_scores(list(qa["image"]), list(qa["q"]), list(qa["a"]))
    worst_cos = float(np.abs(raw - want).max())
    assert worst_cos <= 2e-6
    cut = np.percentile(raw, 40.0)
    assert list(out["image"]) == list(qa["image"][raw >= cut])
    # read back from pandas' JSON (10 decimals)
    assert float(np.abs(out["clipscore"].to_numpy() - raw[raw >= cut]).max()) <= 1e-10
    run_cli(clipeval_bin, "filter", "--mode", "keep-ratio", "--keep-ratio", "0.6", "--input",
            str(inp), "--output", str(tmp_path / "cli.jsonl"), "--question-key", "q",
            "--answer-key", "a", "--model", synth_model, "--pandas-compat", "--quiet")
    same = (tmp_path / "cli.jsonl").read_bytes() == (tmp_path / "c" / "qa_step1.jsonl").read_bytes()
    print(f"dataflow_example: max |similarity - fp64| = {worst_sim:.3g}, max |cos - fp64| = "
          f"{worst_cos:.3g}; {len(out)} of 18 kept; CLI bytes identical: {same}")
    assert same


# ------------------------------------------------------------------ threshold

def test_threshold_edge_and_missing_captions(FileStorage, tiny_model, images, monkeypatch,
                                             caplog):
    """A row exactly at the threshold is kept, one ulp above it is not. Upstream crashes on a
    NaN caption (.strip() of a float); here None and NaN are empty texts: 0.0, warned, as
    upstream does with None, 0 and False."""
    from clipeval.dataflow import ImageClipFilter
    monkeypatch.chdir(images)
    op = ImageClipFilter(model_name=tiny_model, device="cpu")
    caps = ["a cat", "blue car", "the sun", "red", "x"]
    sims = [op.compute_similarity(img, c) for img in ("a.png", "b.jpg") for c in caps]
    top = max(sims)
    assert top > 0
    df = pd.DataFrame({"image": ["a.png"] * 5 + ["b.jpg"] * 5 + ["a.png", "b.jpg", "nope.png",
                                                                 "a.png", "b.jpg"],
                       "caption": caps * 2 + [None, float("nan"), "a cat", 0, False],
                       "n": range(15)})
    df.to_pickle(images / "in.pickle")
    results = {}
    for thr in (top, math.nextafter(top, 2.0), 0.0):
        st = FileStorage(first_entry_file_name=str(images / "in.pickle"),
                         cache_path=str(images / "c"), file_name_prefix=f"t{thr}",
                         cache_type="pickle")
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            assert op.run(st.step(), threshold=thr) == ["image", "caption"]
        out = st.step().read("dataframe")
        results[thr] = out
        assert list(out.index) == list(range(len(out)))  # reset_index(drop=True)
        msgs = [r.getMessage() for r in caplog.records]
        assert sum("Empty text for image" in m for m in msgs) == 4, msgs  # None NaN 0 False
        assert any("nope.png" in m and "similarity 0.0" in m for m in msgs), msgs
    assert list(results[top]["n"]) == [sims.index(top)]  # rows 0-9 are the pairs of sims
    assert len(results[math.nextafter(top, 2.0)]) == 0
    assert len(results[0.0]) == 15  # 0.0 >= 0: upstream keeps failures at a threshold of 0 too
    j = sims.index(top)
    img, cap = ("a.png" if j < 5 else "b.jpg"), caps[j % 5]
    assert op.is_consistent(img, cap, threshold=top)
    assert not op.is_consistent(img, cap, threshold=math.nextafter(top, 2.0))
    print(f"threshold edge: {top!r} keeps 1 row, {math.nextafter(top, 2.0)!r} keeps 0")


# ------------------------------------------------------------------ keep-ratio

def _qa_frame():
    rows = [("a.png", "a ", "cat")] * 4 + [  # four identical pairs: a tie
        ("b.jpg", "a ", "cat"), ("a.png", "red", ""), ("b.jpg", "the ", "sun"),
        ("nope.png", "a ", "cat"), ("a.png", "", ""), ("a.png", None, None),
        ("b.jpg", None, "the sun"), ("b.jpg", " ", "")]
    return pd.DataFrame(rows, columns=["image", "question", "answer"])


def test_percentile_ties_and_nan_rows_match_numpy_and_the_cli(FileStorage, tiny_model,
                                                              clipeval_bin, images,
                                                              monkeypatch):
    """For keep ratios from 0 to 1: the rows kept are numpy's (>= the linear percentile of the
    non-NaN scores), ties at the cut all kept, NaN rows never; the CLI's --scores-out agrees
    value for value and its output is the same bytes."""
    from clipeval.dataflow import CLIPScoreFilter
    monkeypatch.chdir(images)
    df = _qa_frame()
    inp = images / "qa.jsonl"
    df.to_json(inp, orient="records", lines=True, force_ascii=False)
    op = CLIPScoreFilter(model_name=tiny_model, device="cpu")
    raw = op._compute_clip_scores(list(df["image"]), list(df["question"]), list(df["answer"]))
    assert np.isnan(raw[[7, 8, 9]]).all() and not np.isnan(raw[[10, 11]]).any()
    assert raw[10] == op._compute_clip_scores(["b.jpg"], [""], ["the sun"])[0]  # None + str
    assert len(set(raw[:4])) == 1
    for k in range(11):
        keep = k / 10
        op.keep_ratio = keep
        st = FileStorage(first_entry_file_name=str(inp), cache_path=str(images / "c"),
                         file_name_prefix=f"k{k}")
        op.run(st.step())
        out = st.step().read("dataframe")
        cut = numpy_cut(raw, keep)
        want = [i for i in range(len(df)) if raw[i] >= cut]
        assert list(out["question"].fillna("<na>")) == \
            list(df["question"].fillna("<na>")[want]), keep
        run_cli(clipeval_bin, "filter", "--mode", "keep-ratio", "--keep-ratio", str(keep),
                "--input", str(inp), "--output", str(images / "cli.jsonl"), "--scores-out",
                str(images / "s.jsonl"), "--model", tiny_model, "--pandas-compat", "--quiet",
                cwd=images)
        s = scores_out(images / "s.jsonl")
        vals = [math.nan if r["similarity"] is None else r["similarity"] for r in s]
        assert np.array_equal(np.array(vals), raw, equal_nan=True)
        assert [r["kept"] for r in s] == [i in want for i in range(len(df))]
        assert (images / "cli.jsonl").read_bytes() == \
            (images / "c" / f"k{k}_step1.jsonl").read_bytes(), keep
    print(f"keep-ratio 0..1: rows as numpy's percentile; CLI identical; tie of 4 at {raw[0]!r}")


def test_defects_have_defined_results(FileStorage, tiny_model, images, monkeypatch, caplog):
    """Upstream: a mixed batch appends a skipped row's NaN twice (the list outgrows the table);
    no valid score at all leaves filtered_dataframe unbound; NaN + str raises. Here: one value
    per row whatever the batch size, an empty table with a warning, "" for a missing part."""
    from clipeval.dataflow import CLIPScoreFilter
    monkeypatch.chdir(images)
    imgs = ["nope.png" if i % 3 == 1 else "b.jpg" if i % 2 else "a.png" for i in range(12)]
    qs = ["" if i % 5 == 2 else "a " for i in range(12)]
    ans = ["" if i % 5 == 2 else "cat" if i % 4 else "sun" for i in range(12)]
    got = {}
    for bs in (1, 2, 32):
        got[bs] = CLIPScoreFilter(model_name=tiny_model, batch_size=bs, device="cpu") \
            ._compute_clip_scores(imgs, qs, ans)
        assert len(got[bs]) == 12
        assert [bool(x) for x in np.isnan(got[bs])] == [i % 3 == 1 or i % 5 == 2
                                                         for i in range(12)]
    assert np.array_equal(got[1], got[2], equal_nan=True)
    assert np.array_equal(got[1], got[32], equal_nan=True)
    # no score at all: an empty table with every column, a warning, None
    pd.DataFrame({"image": ["a.png", "nope.png"], "question": ["", "q"],
                  "answer": [float("nan"), "a"], "x": [1, 2]}).to_json(
        images / "none.jsonl", orient="records", lines=True)
    st = FileStorage(first_entry_file_name=str(images / "none.jsonl"),
                     cache_path=str(images / "c"), file_name_prefix="none")
    with caplog.at_level(logging.WARNING):
        assert CLIPScoreFilter(model_name=tiny_model, device="cpu").run(st.step()) is None
    assert any("no row has a CLIP score" in r.getMessage() for r in caplog.records)
    assert (images / "c" / "none_step1.jsonl").read_text() == "\n"
    # missing columns: upstream's exceptions
    op = CLIPScoreFilter(model_name=tiny_model, device="cpu")
    for kw, exc in (({"input_image_key": "img"}, ValueError),
                    ({"input_answer_key": "ans"}, ValueError),
                    ({"input_question_key": "q"}, KeyError)):
        with pytest.raises(exc):
            op.run(FileStorage(first_entry_file_name=str(images / "none.jsonl"),
                               cache_path=str(images / "c"), file_name_prefix="e").step(), **kw)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="keep_ratio"):
            CLIPScoreFilter(model_name=tiny_model, keep_ratio=bad, device="cpu")


class _FakePILImage:
    """Stands in for a PIL.Image.Image (Pillow is not a dependency): convert("RGB") -> pixels."""
    __module__ = "PIL.Image"

    def __init__(self, rgb):
        self.rgb = rgb

    def convert(self, mode):
        assert mode == "RGB"
        return self.rgb


class _MemoryStorage:
    """A DataFlow storage kept in memory (the fake PIL image cannot be pickled)."""

    def __init__(self, df):
        self.df, self.written = df, None

    def read(self, output_type="dataframe"):
        return self.df.copy()

    def write(self, df):
        self.written = df


def test_bytes_and_pil_image_cells(FileStorage, tiny_model, images, monkeypatch):
    """CLIPScoreFilter takes what DataFlow's _load_image takes: paths, encoded bytes (a parquet
    table's image column; here through a pickle, Debian has no parquet engine) and PIL images.
    Bytes score exactly as their file, pixels exactly as the decoded file; the index is kept
    (upstream does not reset it)."""
    from clipeval.dataflow import CLIPScoreFilter
    monkeypatch.chdir(images)
    op = CLIPScoreFilter(model_name=tiny_model, keep_ratio=1.0, device="cpu")
    df = pd.DataFrame({"image": ["a.png", (images / "a.png").read_bytes(), b"not an image",
                                 "b.jpg", (images / "b.jpg").read_bytes()],
                       "question": ["a "] * 5, "answer": ["cat"] * 5})
    df.to_pickle(images / "in.pickle")
    st = FileStorage(first_entry_file_name=str(images / "in.pickle"), cache_path=str(images / "c"),
                     file_name_prefix="b", cache_type="pickle")
    op.run(st.step())
    out = st.step().read("dataframe")
    s = out["clipscore"].to_numpy()
    assert list(out.index) == [0, 1, 3, 4]
    assert s[0] == s[1] and s[2] == s[3] and s[0] != s[2]
    assert isinstance(out["image"][1], bytes)
    mem = _MemoryStorage(pd.DataFrame({"image": ["b.jpg", _FakePILImage(
        op.model.decode_image("b.jpg"))], "question": ["a "] * 2, "answer": ["cat"] * 2}))
    op.run(mem)
    s2 = mem.written["clipscore"].to_numpy()
    assert len(s2) == 2 and s2[0] == s2[1] == s[2]


def test_operators_share_one_model(tiny_model):
    import clipeval
    from clipeval.dataflow import CLIPScoreFilter, ImageCLIPEvaluator, ImageClipFilter
    a = ImageClipFilter(model_name=tiny_model, device="cpu")
    loads = clipeval.model_cache_info()["loads"]
    b = CLIPScoreFilter(model_name=tiny_model, device="cpu")
    c = ImageCLIPEvaluator(model_name=tiny_model, device="cpu")
    assert a.model is b.model is c.model
    assert clipeval.model_cache_info()["loads"] == loads
