"""clipeval.dask on LocalCluster(n_workers=2, threads_per_worker=1, processes=True) bound to
127.0.0.1, with the tiny model: results equal the single-process CLI, a SIGKILLed worker loses
nothing, a broken image does not fail the job, the model is loaded once per worker process.
Nothing here depends on timing: the killed-worker test synchronises on a FIFO."""
import glob
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import clipeval
import clipeval.dask as cdask
from conftest import compare_scored_lines, run_cli, shared_file

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

IMAGES = ("cake.jpg", "giraffe.jpg", "astronaut.png", "chelsea.png", "coffee.png", "camera.png",
          "edge_100x60.png", "edge_rgba.png", "edge_jpeg420.jpg")


def new_cluster():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address="127.0.0.1:0")
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client():
    cluster, c = new_cluster()
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def shards(shared, tmp_path_factory):
    """4 JSONL shards of 15 rows; shard 2 has a broken image, a missing one, blank text."""
    d = tmp_path_factory.mktemp("shards")
    imgs = [shared_file(shared, f"golden/images/{n}") for n in IMAGES]
    broken = d / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)
    for s in range(4):
        with open(d / f"part-{s}.jsonl", "w", encoding="utf-8") as f:
            for i in range(15):
                row = {"id": f"{s}-{i}", "image": imgs[(s * 5 + i) % len(imgs)],
                       "caption": f"picture {i % 6} of shard {s}", "n": i}
                if s == 2 and i == 3:
                    row["image"] = str(broken)
                if s == 2 and i == 4:
                    row["image"] = str(d / "missing.png")
                if s == 2 and i == 5:
                    row["caption"] = " "
                if s == 1 and i == 7:
                    row["caption"] = 42
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return sorted(glob.glob(str(d / "part-*.jsonl")))


@pytest.fixture(scope="module")
def cli_outputs(shards, tiny_model, clipeval_bin, tmp_path_factory):
    """The single-process CLI's output for each shard (pandas-compat, as FileStorage writes)."""
    d = tmp_path_factory.mktemp("cli")
    outs = {}
    for p in shards:
        o = d / os.path.basename(p)
        run_cli(clipeval_bin, "score", "--input", p, "--output", str(o), "--model", tiny_model,
                "--image-key", "image", "--text-key", "caption", "--device", "cpu",
                "--threads", "1", "--pandas-compat", "--quiet")
        outs[os.path.basename(p)] = o.read_text(encoding="utf-8").splitlines()
    return outs


OPTS = dict(image_key="image", text_key="caption", device="cpu", threads=1)


def check_against_cli(out_dir, cli_outputs):
    worst = 0.0
    for name, want in cli_outputs.items():
        got = open(os.path.join(out_dir, name), encoding="utf-8").read().splitlines()
        worst = max(worst, compare_scored_lines(got, want))
    return worst


def test_dataframe_partitions_match_single_process(client, shards, tiny_model):
    df = pd.concat([cdask.read_table(p) for p in shards], ignore_index=True)
    ddf = dd.from_pandas(df, npartitions=6)
    before = client.run(clipeval.model_cache_info)
    scored = cdask.score(ddf, model=tiny_model, warn=lambda m: None, **OPTS)
    assert list(scored.columns) == list(df.columns) + ["clip_score"]
    got = scored.compute()
    ref = clipeval.score_dataframe(df, tiny_model, warn=lambda m: None, **OPTS)
    diff = np.abs(got["clip_score"].to_numpy() - ref["clip_score"].to_numpy()).max()
    print(f"6 partitions on 2 workers vs one process: {len(df)} rows, max diff {diff:.3g}")
    assert diff <= 1e-6
    assert got.index.equals(ref.index) and got.drop(columns="clip_score").equals(df)
    assert (got["clip_score"].to_numpy() == 0).sum() == 3  # broken, missing, blank
    # a clipeval.Model travels as its specification: the workers' cached model is reused
    m = clipeval.Model(tiny_model, device="cpu", threads=1)
    again = cdask.score(ddf, model=m, image_key="image", text_key="caption",
                        warn=lambda m: None).compute()
    assert np.abs(again["clip_score"].to_numpy() - got["clip_score"].to_numpy()).max() <= 1e-6
    info = client.run(clipeval.model_cache_info)
    loads = {w: info[w]["loads"] - before[w]["loads"] for w in info}
    print(f"model loads per worker for 12 partitions: {loads}")
    assert all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1
    with pytest.raises(KeyError, match="'nope' not found"):
        cdask.score(ddf, model=tiny_model, image_key="nope")


def test_score_files_match_cli_broken_image_and_resume(client, shards, tiny_model,
                                                       cli_outputs, tmp_path):
    out = tmp_path / "out"
    res = cdask.score_files(client, os.path.join(os.path.dirname(shards[0]), "part-*.jsonl"),
                            str(out), model=tiny_model, warn=lambda m: None, **OPTS)
    assert [s["input"] for s in res["done"]] == shards and res["skipped"] == []
    bad = next(s for s in res["done"] if s["input"].endswith("part-2.jsonl"))
    assert bad["image_failed"] == 2 and bad["empty_text"] == 1 and bad["rows"] == 15
    worst = check_against_cli(out, cli_outputs)
    print(f"score_files vs CLI: 4 shards, max score diff {worst:.3g}")
    lines = (out / "part-2.jsonl").read_text().splitlines()
    assert [json.loads(line)["clip_score"] for line in lines[3:6]] == [0.0, 0.0, 0.0]
    assert not glob.glob(str(out / ".*tmp*"))
    # resume: complete outputs are skipped and left alone
    stamp = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(out / "*.jsonl"))}
    res2 = cdask.score_files(client, shards, str(out), model=tiny_model, **OPTS)
    assert res2["done"] == [] and len(res2["skipped"]) == 4
    os.remove(out / "part-1.jsonl")
    res3 = cdask.score_files(client, shards, str(out), model=tiny_model,
                             warn=lambda m: None, **OPTS)
    assert [os.path.basename(s["output"]) for s in res3["done"]] == ["part-1.jsonl"]
    for p, t in stamp.items():
        if not p.endswith("part-1.jsonl"):
            assert os.stat(p).st_mtime_ns == t
    check_against_cli(out, cli_outputs)
    # errors: a missing column fails the job and writes nothing
    with pytest.raises(KeyError, match="'nope' not found"):
        cdask.score_files(client, shards[:1], str(tmp_path / "o2"), model=tiny_model,
                          image_key="nope", device="cpu", threads=1)
    assert os.listdir(tmp_path / "o2") == []
    with pytest.raises(FileNotFoundError, match="no input matches"):
        cdask.score_files(client, str(tmp_path / "none-*.jsonl"), str(tmp_path / "o3"))
    with pytest.raises(ValueError, match="same output name"):
        dup = tmp_path / "dup"
        dup.mkdir()
        (dup / os.path.basename(shards[0])).write_text(open(shards[0]).read())
        cdask.score_files(client, [shards[0], str(dup / os.path.basename(shards[0]))],
                          str(tmp_path / "o4"))


def _command(*args):
    return subprocess.run([sys.executable, "-m", "clipeval.dask", *args], capture_output=True,
                          text=True, timeout=600)


def test_command_line(client, shards, tiny_model, cli_outputs, tmp_path, capfd):
    pattern = os.path.join(os.path.dirname(shards[0]), "part-*.jsonl")
    common = ["--input", pattern, "--model", tiny_model, "--image-key", "image", "--text-key",
              "caption", "--device", "cpu", "--threads", "1"]
    addr = client.scheduler.address
    r = _command("--scheduler", addr, "--output-dir", str(tmp_path / "a"), *common)
    assert r.returncode == 0, r.stderr
    assert "4 shards scored (60 rows, 57 scored, 2 failed (image)), 0 skipped" in r.stderr
    check_against_cli(tmp_path / "a", cli_outputs)
    r = _command("--scheduler", addr, "--output-dir", str(tmp_path / "a"), *common)
    assert r.returncode == 0 and "0 shards scored" in r.stderr and "4 skipped" in r.stderr
    # a cluster of its own: local:1; several paths after one --input (an unquoted glob)
    r = _command("--scheduler", "local:1", "--output-dir", str(tmp_path / "b"), "--quiet",
                 *common[:1], shards[0], shards[3], *common[2:])
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "b")) == ["part-0.jsonl", "part-3.jsonl"]
    check_against_cli(tmp_path / "b", {k: cli_outputs[k] for k in ("part-0.jsonl",
                                                                   "part-3.jsonl")})
    # errors (in this process: they stop before any cluster is involved, or use ours)
    assert cdask.main(["--scheduler", "local:0", "--output-dir", "x", *common]) == 2
    assert cdask.main(["--scheduler", addr, "--scheduler-file", "f", "--output-dir", "x",
                       *common]) == 2
    assert cdask.main(["--scheduler", addr, "--output-dir", str(tmp_path / "c"), "--input",
                       str(tmp_path / "zz*.jsonl")]) == 1
    assert cdask.main(["--scheduler", addr, "--output-dir", str(tmp_path / "c"), *common,
                       "--image-key", "nope", "--quiet"]) == 1
    assert os.listdir(tmp_path / "c") == []
    with pytest.raises(SystemExit):
        cdask.main(["--output-dir", "x"])  # --input is required
    err = capfd.readouterr().err
    for msg in ("local:N", "not both", "no input matches", "'nope' not found",
                "the following arguments are required: --input"):
        assert msg in err, (msg, err)


def test_table_files_errors(shards, tmp_path):
    with pytest.raises(ValueError, match="unsupported table type 'txt'"):
        cdask.read_table(str(tmp_path / "a.txt"))
    with pytest.raises(ValueError, match="unsupported table type"):
        cdask.table_type(str(tmp_path / "noext"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a", "text": "b"}\n\n{"image": oops}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: invalid JSON"):
        cdask.read_table(str(bad))
    with pytest.raises(ValueError, match="cache_type 'xml'"):
        cdask.score_files(None, shards, str(tmp_path / "o"), cache_type="xml")
    tsv = tmp_path / "x.tsv"
    tsv.write_text("image\ttext\n")
    with pytest.raises(ValueError, match="unsupported table type 'tsv'"):
        cdask.score_files(None, [str(tsv)], str(tmp_path / "o"))
    assert cdask.output_path("/a/b/part-1.jsonl", "/o", "csv") == "/o/part-1.csv"


def test_killed_worker_loses_nothing(shards, tiny_model, cli_outputs, tmp_path):
    """The worker holding part-1 is SIGKILLed after writing its temporary file, before the
    rename. The nanny restarts it, the scheduler runs part-1 again, and every shard ends up
    complete, each row once, equal to the CLI; no temporary file is left."""
    fifo, marker = str(tmp_path / "ready.fifo"), str(tmp_path / "killed-once")
    os.mkfifo(fifo)
    victim = "part-1.jsonl"

    def hook(event, path, detail):  # runs on the workers (pickled by value)
        if event != "commit" or os.path.basename(path) != victim:
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # the second attempt goes through
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        with open(fifo, "w") as f:  # wakes the test
            f.write(f"{os.getpid()} {detail}\n")
        threading.Event().wait()  # until killed

    cluster, client = new_cluster()
    out = tmp_path / "out"
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    result, errors = {}, []

    def job():
        try:
            result.update(cdask.score_files(client, shards, str(out), model=tiny_model,
                                            on_shard=hook, warn=lambda m: None, **OPTS))
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    t = threading.Thread(target=job)
    try:
        t.start()
        msg = b""
        deadline = time.monotonic() + 300  # a bound against hanging, not a timing assumption
        while not msg.endswith(b"\n"):
            ready, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "no worker reached the commit point of part-1"
            chunk = os.read(rfd, 4096)
            if not chunk and time.monotonic() > deadline:
                pytest.fail("the FIFO closed without a message")
            msg += chunk
        pid_s, tmp = msg.decode().split()
        pid = int(pid_s)
        assert os.path.exists(tmp) and not os.path.exists(out / victim)  # mid-shard
        workers = client.run(os.getpid)
        assert pid in workers.values()
        os.kill(pid, signal.SIGKILL)
        t.join(600)
        assert not t.is_alive() and not errors, errors
        assert len(result["done"]) == 4
        rerun = next(s for s in result["done"] if s["input"].endswith(victim))
        assert rerun["pid"] != pid
        worst = check_against_cli(out, cli_outputs)
        for p in shards:
            ids_in = [json.loads(line)["id"] for line in open(p)]
            ids_out = [json.loads(line)["id"] for line in open(out / os.path.basename(p))]
            assert ids_out == ids_in  # every row exactly once, in order
        assert not glob.glob(str(out / ".*tmp*")), os.listdir(out)
        # the nanny restarted the killed worker (the scheduler had removed it before it ran
        # part-1 again, so the two workers now are the survivor and the new one)
        client.wait_for_workers(2, timeout=300)
        now = client.run(os.getpid)
        assert len(now) == 2 and pid not in now.values()
        print(f"worker {pid} killed mid-shard; part-1 rerun by {rerun['pid']}; 4 shards, 60 "
              f"rows, each once; max score diff vs CLI {worst:.3g}; workers now "
              f"{sorted(client.run(os.getpid).values())}")
    finally:
        os.close(rfd)
        client.close()
        cluster.close()
