"""clipeval.dataflow.ImageCLIPEvaluator against DataFlow-MM's own FileStorage and pipeline
script (verbatim in ../shared/dataflow-mm), through the minimal `dataflow` shim next to this
file."""
import ast
import inspect
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import clipeval
from conftest import compare_scored_lines, run_cli, shared_file

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(HERE, "dataflow_shim")
PYDIR = os.path.join(HERE, "..", "..", "python")
UPSTREAM_OP = "dataflow-mm/dataflow/operators/core_vision/eval/image_clip_evaluator.py"
PIPELINE = "dataflow-mm/dataflow/statics/pipelines/gpu_pipelines/image_eval_clip.py"


def env_with(*paths, shared):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["CLIPEVAL_SHARED"] = shared
    return env


@pytest.fixture(scope="module")
def upstream_storage(shared):
    """Upstream's FileStorage (imports the shim's `dataflow` into this process)."""
    shared_file(shared, "dataflow-mm/dataflow/utils/storage.py")
    os.environ.setdefault("CLIPEVAL_SHARED", shared)
    if SHIM not in sys.path:
        sys.path.insert(0, SHIM)
    from dataflow.utils.storage import FileStorage
    return FileStorage


def test_upstream_pipeline_script_runs_unchanged_and_matches_cli(shared, synth_model,
                                                                 clipeval_bin, tmp_path):
    script = shared_file(shared, PIPELINE)
    golden = os.path.join(shared, "golden")
    inp = shared_file(shared, "golden/scores/dataflow_example.input.jsonl")
    cache_py, result = tmp_path / "cache_py", tmp_path / "py" / "result.jsonl"
    r = subprocess.run([sys.executable, script, "--input_file", inp, "--output_file",
                        str(result), "--cache_path", str(cache_py), "--file_name_prefix",
                        "imgtext_eval_clip", "--model_name", synth_model, "--image_key",
                        "image", "--caption_key", "caption"], cwd=golden, capture_output=True,
                       text=True, env=env_with(SHIM, PYDIR, shared=shared), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "CLIP 评估结果已保存到" in r.stdout
    cache_cli = tmp_path / "cache_cli"
    run_cli(clipeval_bin, "score", "--first-entry-file", inp, "--cache-path", str(cache_cli),
            "--file-name-prefix", "imgtext_eval_clip", "--model", synth_model, "--image-key",
            "image", "--text-key", "caption", "--pandas-compat", "--quiet", cwd=golden)
    cli = (cache_cli / "imgtext_eval_clip_step1.jsonl").read_bytes()
    for produced in (cache_py / "imgtext_eval_clip_step1.jsonl", result):
        got = produced.read_bytes()
        worst = compare_scored_lines(got.decode().splitlines(), cli.decode().splitlines())
        print(f"{produced.name}: 18 rows, max |operator - cli| = {worst:.3g}, "
              f"bytes identical: {got == cli}")
        assert got.endswith(b"\n") == cli.endswith(b"\n")


def test_base_class_with_and_without_dataflow(shared):
    probe = ("import sys, clipeval.dataflow as d\n"
             "print(d.ImageCLIPEvaluator.__mro__[1].__module__, 'dataflow' in sys.modules)\n")
    alone = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env=env_with(PYDIR, shared=shared), timeout=120)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.split() == ["clipeval.dataflow", "False"]
    probe2 = ("import clipeval.dataflow as d\nfrom dataflow.core import OperatorABC\n"
              "print(issubclass(d.ImageCLIPEvaluator, OperatorABC), OperatorABC.__module__)\n")
    shimmed = subprocess.run([sys.executable, "-c", probe2], capture_output=True, text=True,
                             env=env_with(SHIM, PYDIR, shared=shared), timeout=120)
    assert shimmed.returncode == 0, shimmed.stderr
    assert shimmed.stdout.split() == ["True", "dataflow.core.Operator"]


def _upstream_class(shared):
    tree = ast.parse(open(shared_file(shared, UPSTREAM_OP), encoding="utf-8").read())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef)
                and n.name == "ImageCLIPEvaluator")


def _args(fn):
    a = fn.args
    names = [x.arg for x in a.args]
    defaults = [ast.literal_eval(d) for d in a.defaults]
    return names, dict(zip(names[len(names) - len(defaults):], defaults))


def test_signatures_and_description_match_upstream(shared):
    from clipeval.dataflow import ImageCLIPEvaluator
    cls = _upstream_class(shared)
    fns = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    for name in ("__init__", "run"):
        names, defaults = _args(fns[name])
        sig = inspect.signature(getattr(ImageCLIPEvaluator, name))
        params = [p for p in sig.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in params] == names, name
        for p in params:
            if p.name in defaults:
                assert p.default == defaults[p.name], (name, p.name)
    # get_desc: upstream's function, executed on its own, gives the same text
    fn = fns["get_desc"]
    fn.decorator_list = []
    ns = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), UPSTREAM_OP, "exec"), ns)
    for lang in ("zh", "en"):
        assert ImageCLIPEvaluator.get_desc(lang) == ns["get_desc"](lang)
    assert ImageCLIPEvaluator.get_desc() == ns["get_desc"]()


@pytest.mark.parametrize("cache_type", ["jsonl", "json", "csv", "pickle", "parquet"])
def test_storage_formats(cache_type, upstream_storage, shared, tiny_model, tmp_path,
                         monkeypatch):
    """Every FileStorage cache type round-trips through pandas (tiny model: fast)."""
    import pandas as pd
    if cache_type == "parquet":
        try:
            pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "probe.parquet")
        except ImportError:
            pytest.skip("no parquet engine for pandas here: neither pyarrow nor fastparquet "
                        "(Debian bookworm packages neither)")
    from clipeval.dataflow import ImageCLIPEvaluator
    monkeypatch.chdir(os.path.join(shared, "golden"))
    inp = shared_file(shared, "golden/scores/dataflow_example.input.jsonl")
    storage = upstream_storage(first_entry_file_name=inp, cache_path=str(tmp_path / "c"),
                               file_name_prefix="clip", cache_type=cache_type)
    op = ImageCLIPEvaluator(model_name=tiny_model, device="cpu")
    assert op.run(storage=storage.step(), input_image_key="image", input_text_key="caption",
                  output_key="score") == ["score"]
    assert os.path.exists(tmp_path / "c" / f"clip_step1.{cache_type}")
    df = storage.step().read("dataframe")
    want = clipeval.score_dataframe(storage.reset().step().read("dataframe"), op.model,
                                    image_key="image", text_key="caption")["clip_score"]
    worst = float(np.abs(df["score"].to_numpy(dtype=np.float64) - want.to_numpy()).max())
    print(f"{cache_type}: max |read back - score_dataframe| = {worst:.3g}")
    assert worst <= 1e-6 and list(df.columns) == ["image", "caption", "score"]


def test_warnings_go_to_the_logger_and_models_are_shared(upstream_storage, shared,
                                                         synth_model, tmp_path, monkeypatch,
                                                         caplog):
    from clipeval.dataflow import ImageCLIPEvaluator
    monkeypatch.chdir(os.path.join(shared, "golden"))
    inp = shared_file(shared, "golden/scores/edge_rows.input.jsonl")
    op = ImageCLIPEvaluator(model_name=synth_model, device="cpu")
    loads = clipeval.model_cache_info()["loads"]
    op2 = ImageCLIPEvaluator(model_name=synth_model, device="cpu")
    assert op2.model is op.model and clipeval.model_cache_info()["loads"] == loads
    storage = upstream_storage(first_entry_file_name=inp, cache_path=str(tmp_path),
                               file_name_prefix="edge")
    with caplog.at_level(logging.WARNING):
        op.run(storage.step(), input_image_key="image", input_text_key="caption")
    bad = [r for r in caplog.records if "score 0.0" in r.getMessage()]
    assert len(bad) == 4, [r.getMessage() for r in caplog.records]
    assert "does_not_exist.png" in bad[0].getMessage()
    df = storage.step().read("dataframe")
    rows = json.load(open(shared_file(shared, "golden/scores/edge_rows.scores.json")))["rows"]
    for r, s in zip(rows, df["clip_score"]):
        assert (abs(s - r["score_f64"]) <= 1e-6) if r["status"] == "scored" else s == 0.0
    # upstream's per-row method
    s = op.compute_similarity("images/2.png", "5")
    assert abs(s - rows[7]["score_f64"]) <= 1e-6
    assert op.compute_similarity("images/does_not_exist.png", "a") == 0.0
    with pytest.raises(KeyError, match="'nope' not found"):
        op.run(upstream_storage(first_entry_file_name=inp, cache_path=str(tmp_path),
                                file_name_prefix="e2").step(), input_image_key="nope")
    with pytest.raises(clipeval.ClipError, match="batch size"):
        ImageCLIPEvaluator(model_name=synth_model, device="cpu", batch_size=0)
