"""`make bench-python` (part of `make bench`): the Python figures, each a ratio measured in one
run (the machine is shared and noisy: compare ratios, not seconds).

1. Python overhead vs the CLI on the DataFlow example (18 rows, 3 images, ViT-B/32 synthetic):
   DataFlow-MM's own pipeline script with clipeval's operator (a new python process: imports,
   model load, FileStorage, scoring, writing) against `clipeval score --first-entry-file ...`
   (a new process too), one thread each, runs interleaved, medians compared.
2. Dask: rows/s of clipeval.dask.score_files with 1 and with 2 single-threaded worker
   processes (LocalCluster), on 4 shards of 32 rows (8 distinct images each, none shared), the
   model preloaded on every worker; rounds interleaved, medians compared. The single-process
   CLI on the same 128 rows (all cores) is printed as the yardstick.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = int(os.environ.get("CLIPEVAL_BENCH_ROUNDS", "3"))


def env_dirs():
    shared = os.environ.get("CLIPEVAL_SHARED")
    build = os.environ.get("CLIPEVAL_BUILD", os.path.join(HERE, "..", "..", "build"))
    synth = os.path.join(os.environ.get("CLIPEVAL_SYNTH_DIR", os.path.join(build, "models")),
                         "vitb32-synth")
    if not shared or not os.path.exists(os.path.join(synth, "model.safetensors")):
        sys.exit("bench_python: run it through `make bench-python` (CLIPEVAL_SHARED and the "
                 "synthetic model are needed)")
    return shared, build, synth


def timed(cmd, **kw):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


def bench_overhead(shared, build, synth, tmp):
    golden = os.path.join(shared, "golden")
    inp = os.path.join(golden, "scores", "dataflow_example.input.jsonl")
    script = os.path.join(shared, "dataflow-mm", "dataflow", "statics", "pipelines",
                          "gpu_pipelines", "image_eval_clip.py")
    # one thread each: the ratio is the Python overhead, not thread scaling (and single
    # threads are steadier on a busy shared machine)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(HERE, "dataflow_shim"),
                                         env.get("PYTHONPATH", "")])
    cli = [os.path.join(build, "clipeval"), "score", "--first-entry-file", inp, "--cache-path",
           os.path.join(tmp, "cli"), "--file-name-prefix", "p", "--model", synth, "--image-key",
           "image", "--text-key", "caption", "--pandas-compat", "--quiet"]
    py = [sys.executable, script, "--input_file", inp, "--output_file",
          os.path.join(tmp, "py", "out.jsonl"), "--cache_path", os.path.join(tmp, "py"),
          "--model_name", synth]
    t_cli, t_py = [], []
    for _ in range(ROUNDS):
        t_cli.append(timed(cli, cwd=golden, env=env))
        t_py.append(timed(py, cwd=golden, env=env))
    # where the Python time goes: interpreter + imports, model load, scoring (in process)
    probe = ("import time; t0 = time.monotonic()\n"
             "import json, pandas as pd, clipeval\n"
             "t1 = time.monotonic(); m = clipeval.Model(%r)\n"
             "t2 = time.monotonic()\n"
             "df = pd.DataFrame([json.loads(l) for l in open(%r)])\n"
             "clipeval.score_dataframe(df, m, image_key='image', text_key='caption')\n"
             "t3 = time.monotonic(); print(t1 - t0, t2 - t1, t3 - t2)\n") % (synth, inp)
    parts = subprocess.run([sys.executable, "-c", probe], cwd=golden, check=True, env=env,
                           capture_output=True, text=True).stdout.split()
    c, p = statistics.median(t_cli), statistics.median(t_py)
    print("== Python overhead vs the CLI: DataFlow example (18 rows, 3 images), ViT-B/32 "
          "synthetic, 1 thread each ==")
    print(f"clipeval score --first-entry-file (new process)     median {c:6.2f} s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in t_cli)})")
    print(f"upstream pipeline script + clipeval operator        median {p:6.2f} s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in t_py)})")
    print(f"  ratio python / cli: x{p / c:.2f}  (python: imports {float(parts[0]):.2f} s, "
          f"model load {float(parts[1]):.2f} s, score_dataframe {float(parts[2]):.2f} s)")


def make_shards(shared, tmp):
    order = json.load(open(os.path.join(shared, "golden", "embeddings", "vitb32-synth",
                                        "order.json")))["images"]
    files = {}
    for line in open(os.path.join(shared, "golden", "images", "index.jsonl")):
        rec = json.loads(line)
        files[rec["name"]] = os.path.join(shared, "golden", "images", rec["file"])
    names = [n for n in order if n not in ("0", "1")][:32]  # 32 distinct, the 2 largest out
    d = os.path.join(tmp, "shards")
    os.makedirs(d)
    for s in range(4):
        with open(os.path.join(d, f"part-{s}.jsonl"), "w") as f:
            for i in range(32):
                f.write(json.dumps({"image": files[names[s * 8 + i % 8]],
                                    "caption": f"caption {i // 8} of picture {s * 8 + i % 8}"})
                        + "\n")
    with open(os.path.join(tmp, "all.jsonl"), "w") as f:
        for s in range(4):
            f.write(open(os.path.join(d, f"part-{s}.jsonl")).read())
    return d


def bench_dask(shared, build, synth, tmp):
    from distributed import Client, LocalCluster

    import clipeval
    import clipeval.dask as cdask
    d = make_shards(shared, tmp)
    opts = dict(image_key="image", text_key="caption", device="cpu", threads=1)
    clusters = {}
    for n in (1, 2):
        cl = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0")
        c = Client(cl)
        c.run(clipeval.cached_model, synth, "cpu", 1, "fp32")  # the model on every worker
        clusters[n] = (cl, c)
    rates = {1: [], 2: []}
    rows = 128
    for r in range(ROUNDS):
        for n in (1, 2):
            t0 = time.monotonic()
            res = cdask.score_files(clusters[n][1], os.path.join(d, "*.jsonl"),
                                    os.path.join(tmp, f"out{n}"), model=synth, force=True,
                                    **opts)
            el = time.monotonic() - t0
            assert sum(s["rows"] for s in res["done"]) == rows
            rates[n].append(rows / el)
    for cl, c in clusters.values():
        c.close()
        cl.close()
    t_cli = timed([os.path.join(build, "clipeval"), "score", "--input",
                   os.path.join(tmp, "all.jsonl"), "--output", os.path.join(tmp, "cli.jsonl"),
                   "--model", synth, "--image-key", "image", "--text-key", "caption",
                   "--device", "cpu", "--quiet"])
    r1, r2 = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"== Dask: clipeval.dask.score_files, 4 shards x 32 rows (8 distinct images each), "
          f"ViT-B/32 synthetic, 1 thread per worker, {os.cpu_count()} cores ==")
    print(f"1 worker   median {r1:7.2f} rows/s  (rounds: "
          f"{', '.join(f'{x:.2f}' for x in rates[1])})")
    print(f"2 workers  median {r2:7.2f} rows/s  (rounds: "
          f"{', '.join(f'{x:.2f}' for x in rates[2])})")
    print(f"  ratio 2 workers / 1 worker: x{r2 / r1:.2f}")
    print(f"clipeval score, one process, all cores, same 128 rows: {rows / t_cli:7.2f} rows/s "
          f"(includes its model load)")


def main():
    shared, build, synth = env_dirs()
    with tempfile.TemporaryDirectory(prefix="clipeval-bench-") as tmp:
        if os.environ.get("CLIPEVAL_BENCH_PART", "overhead,dask").find("overhead") >= 0:
            bench_overhead(shared, build, synth, tmp)
        if os.environ.get("CLIPEVAL_BENCH_PART", "overhead,dask").find("dask") >= 0:
            bench_dask(shared, build, synth, tmp)


if __name__ == "__main__":
    main()
