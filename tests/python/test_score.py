"""score_dataframe / Model.score: the CLI scorer's semantics on pandas DataFrames."""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest

import clipeval
from clipeval.scoring import _Cache
from conftest import compare_scored_lines, run_cli, shared_file

SETS = ("dataflow_example", "legacy_demo", "edge_rows")


def read_records(path):
    """DataFlow FileStorage's JSONL reader: json.loads per line, pd.DataFrame(records)."""
    return pd.DataFrame([json.loads(line) for line in open(path, encoding="utf-8")
                         if line.strip()])


@pytest.fixture(scope="module")
def synth(synth_model):
    return clipeval.Model(synth_model, device="cpu")


@pytest.mark.parametrize("name", SETS)
def test_golden_sets_match_dataflow_and_cli(name, synth, synth_model, shared, clipeval_bin,
                                            tmp_path):
    golden = os.path.join(shared, "golden")
    inp = shared_file(shared, f"golden/scores/{name}.input.jsonl")
    rows = json.load(open(shared_file(shared, f"golden/scores/{name}.scores.json")))["rows"]
    df = read_records(inp)
    warned = []
    out = clipeval.score_dataframe(df, synth, image_key="image", text_key="caption",
                                   image_root=golden, warn=warned.append)
    assert "clip_score" not in df.columns  # not in place by default
    assert list(out.columns) == list(df.columns) + ["clip_score"]
    got = out["clip_score"].to_numpy()
    assert got.dtype == np.float64
    # DataFlow (HF, float64 reference) row by row
    worst = 0.0
    for r, s in zip(rows, got):
        if r["status"] == "scored":
            worst = max(worst, abs(s - r["score_f64"]))
            assert abs(s - r["score_f64"]) <= 1e-6, (r["row"], s, r["score_f64"])
        else:
            assert s == 0.0, (r["row"], r["status"], s)
    n_bad = sum(r["status"] == "image_error" for r in rows)
    assert len(warned) == n_bad, warned
    assert all(re.match(r"row \d+: (failed to load image|cannot score)", w) for w in warned)
    # the CLI on the same file (shortest-repr scores)
    cli_out = tmp_path / "cli.jsonl"
    run_cli(clipeval_bin, "score", "--input", inp, "--output", str(cli_out), "--model",
            synth_model, "--image-key", "image", "--text-key", "caption", "--device", "cpu",
            "--quiet", cwd=golden)
    cli = np.array([json.loads(line)["clip_score"] for line in open(cli_out)])
    diff = np.abs(got - cli).max()
    print(f"{name}: {len(rows)} rows, max |python - fp64| = {worst:.3g}, "
          f"max |python - cli| = {diff:.3g}")
    assert diff <= 1e-6
    # pandas' own writer: the expected file byte for byte apart from the score digits
    lines = out.to_json(orient="records", lines=True, force_ascii=False).splitlines()
    expected = open(shared_file(shared, f"golden/scores/{name}.expected.jsonl"),
                    encoding="utf-8").read().splitlines()
    compare_scored_lines(lines, expected)


def test_dedup_and_stats(synth, shared):
    df = read_records(shared_file(shared, "golden/scores/dataflow_example.input.jsonl"))
    scorer = clipeval.Scorer(synth, image_root=os.path.join(shared, "golden"))
    out = clipeval.score_dataframe(df, image_key="image", text_key="caption", scorer=scorer)
    st = scorer.stats
    assert (st["rows"], st["scored"], st["images_encoded"], st["texts_encoded"]) == (18, 18, 3, 18)
    # the same scorer again: everything comes from its caches
    again = clipeval.score_dataframe(df, image_key="image", text_key="caption", scorer=scorer)
    assert st["images_encoded"] == 3 and st["texts_encoded"] == 18 and st["rows"] == 36
    assert again["clip_score"].to_numpy().tobytes() == out["clip_score"].to_numpy().tobytes()


def test_model_score_rules(synth, shared, tmp_path):
    img = shared_file(shared, "golden/images/cake.jpg")
    data = open(img, "rb").read()
    rgb = synth.decode_image(img)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.warns(clipeval.ClipWarning) as w:
        s = synth.score([img, data, rgb, img, img, img, str(broken), None, float("nan"), 7, ""],
                        ["a cake", "a cake", "a cake", "", " \u3000\t", 5, "x", "x", "x", "x",
                         "x"])
    assert s.dtype == np.float64 and s.shape == (11,)
    # path, bytes and pixels: the same image (within 1e-6: three rows of one batch; the engine
    # is being made bit-identical whatever a row's place in the batch)
    print(f"path/bytes/pixels: max diff {max(abs(s[0] - s[1]), abs(s[0] - s[2])):.3g}")
    assert s[0] > 0 and abs(s[0] - s[1]) <= 1e-6 and abs(s[0] - s[2]) <= 1e-6
    assert s[3] == 0.0 and s[4] == 0.0  # empty / whitespace text
    assert abs(s[5] - synth.score([img], ["5"])[0]) <= 1e-6  # str() of a non-string text
    assert list(s[6:]) == [0.0] * 5
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 5, msgs
    assert "broken.png" in msgs[0]
    assert "image value is null" in msgs[1] and "image value is missing" in msgs[2]
    assert "image value is not a string" in msgs[3] and "image path is empty" in msgs[4]
    # a bad image warns even when the text is blank (DataFlow loads the image first)
    warned = []
    assert synth.score([str(broken)], [""], warn=warned.append)[0] == 0.0
    assert len(warned) == 1 and "broken.png" in warned[0]
    with pytest.raises(clipeval.ClipError, match="2 images but 1 texts"):
        synth.score([img, img], ["a"])


def test_score_formula_matches_golden_cosines(synth, shared):
    """pair_cosines rounds the double sum once to float32, like torch's float((a*b).sum())."""
    rows = json.load(open(shared_file(shared, "golden/scores/dataflow_example.scores.json")))
    cos = np.array([r["cos_f32"] for r in rows["rows"]])
    scores = np.array([r["score"] for r in rows["rows"]])
    assert np.array_equal(clipeval.dataflow_scores(cos), scores)
    assert list(clipeval.dataflow_scores([-3.0, 3.0, float("nan")])[:2]) == [0.0, 1.0]
    assert np.isnan(clipeval.dataflow_scores([float("nan")])[0])


def test_text_limit_and_columns(synth, shared):
    img = shared_file(shared, "golden/images/cake.jpg")
    df = pd.DataFrame({"image_path": [img, img], "text": ["a cake", "x" * 100]})
    warned = []
    out = clipeval.score_dataframe(df, synth, max_text_bytes=50, warn=warned.append)
    assert out["clip_score"][1] == 0.0 and out["clip_score"][0] > 0
    assert len(warned) == 1 and "text of 100 bytes" in warned[0]
    with pytest.raises(KeyError, match="'caption' not found"):
        clipeval.score_dataframe(df, synth, text_key="caption")
    # an existing output column is replaced in place; inplace=True writes into df
    df2 = df.assign(clip_score="old", other=1)
    out2 = clipeval.score_dataframe(df2, synth, inplace=True)
    assert out2 is df2 and list(df2.columns) == ["image_path", "text", "clip_score", "other"]
    assert df2["clip_score"].dtype == np.float64
    # the index labels name the rows in warnings
    df3 = pd.DataFrame({"image_path": [None], "text": ["a"]}, index=["row-a"])
    warned.clear()
    clipeval.score_dataframe(df3, synth, warn=warned.append)
    assert warned[0].startswith("row row-a: cannot score")
    with pytest.raises(clipeval.ClipError, match="batch size 0"):
        clipeval.score_dataframe(df, synth, batch_size=0)
    empty = clipeval.score_dataframe(df.iloc[:0], synth)
    assert len(empty) == 0 and "clip_score" in empty.columns
    with pytest.raises(TypeError, match="either scorer= or scoring options"):
        clipeval.score_dataframe(df, scorer=clipeval.Scorer(synth), batch_size=4)
    twice = pd.DataFrame([[img, "a", "b"]], columns=["image_path", "text", "text"])
    with pytest.raises(ValueError, match="appears more than once"):
        clipeval.score_dataframe(twice, synth)


def test_text_is_str_of_the_value_pandas_holds(synth, shared):
    """iterrows() semantics: a frame without object columns is upcast (an int caption next to
    a float column becomes "5.0"), with one it is not ("5")."""
    img = shared_file(shared, "golden/images/cake.jpg")
    mixed = pd.DataFrame({"image_path": [img], "text": [5]})
    numeric = pd.DataFrame({"image_path": [1.5], "text": [5]})  # image not a path: 0.0 anyway
    from clipeval.scoring import column_values
    assert [str(v) for v in column_values(mixed, "text", 0, 1)] == ["5"]
    assert [str(v) for v in column_values(numeric, "text", 0, 1)] == ["5.0"]
    assert [str(v) for v, (_, r) in zip(column_values(numeric, "text", 0, 1),
                                       numeric.iterrows())] == [str(numeric.iloc[0]["text"])]
    s = clipeval.score_dataframe(mixed, synth)["clip_score"][0]
    assert s == synth.score([img], ["5"])[0]


def test_windows_and_cache_eviction_match_cli(tiny_model, shared, clipeval_bin, tmp_path):
    """9,000 rows (3 windows of 4,096), 9,000 distinct texts and a cache of 8,192 entries (the
    minimum): entries of the first window are evicted, as in the CLI; scores bit-identical."""
    imgs = [shared_file(shared, f"golden/images/{n}") for n in
            ("cake.jpg", "giraffe.jpg", "camera.png", "edge_100x60.png")]
    missing = str(tmp_path / "missing.png")
    inp = tmp_path / "big.jsonl"
    with open(inp, "w") as f:
        for i in range(9000):
            img = missing if i % 997 == 0 else imgs[i % 4]
            text = "" if i % 1001 == 0 else f"caption number {i} of a picture"
            f.write(json.dumps({"image_path": img, "text": text}) + "\n")
    out = tmp_path / "cli.jsonl"
    r = run_cli(clipeval_bin, "score", "--input", str(inp), "--output", str(out), "--model",
                tiny_model, "--device", "cpu", "--cache-entries", "1", "--threads", "1")
    m = re.search(r"(\d+) images \+ (\d+) texts encoded", r.stderr)
    model = clipeval.Model(tiny_model, device="cpu", threads=1)
    scorer = clipeval.Scorer(model, cache_entries=1, warn=lambda msg: None)
    got = clipeval.score_dataframe(read_records(inp), scorer=scorer)["clip_score"].to_numpy()
    cli = np.array([json.loads(line)["clip_score"] for line in open(out)])
    print(f"9000 rows: max |python - cli| = {np.abs(got - cli).max():.3g}; encoded "
          f"{scorer.stats['images_encoded']} images + {scorer.stats['texts_encoded']} texts "
          f"(cli: {m.group(1)} + {m.group(2)})")
    assert np.abs(got - cli).max() <= 1e-6
    assert (scorer.stats["images_encoded"], scorer.stats["texts_encoded"]) == (
        int(m.group(1)), int(m.group(2)))
    assert scorer.stats["image_failed"] == 10 and scorer.stats["empty_text"] == 8


def test_lru_cache_unit():
    c = _Cache(2, 3)
    a, ins = c.get("a", 1, "a")
    assert ins
    c.store(a, np.ones(3))
    b, _ = c.get("b", 1, "b")
    c.store(b, np.full(3, 2.0))
    c.get("a", 2, "a")  # "a" is now the most recent: "b" goes first
    x, ins = c.get("x", 2, "x")
    assert ins and "b" not in c.map and "a" in c.map
    c.store(x, np.full(3, 3.0))
    assert x.slot == b.slot  # the evicted entry's row is reused
    assert list(c.arena[a.slot]) == [1.0] * 3
    with pytest.raises(clipeval.ClipError, match="exhausted"):
        c.get("y", 2, "y")  # both entries are used by window 2
