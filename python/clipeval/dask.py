"""clipeval on Dask: score a dask DataFrame, or a folder of table shards, on any Dask cluster
(distributed.LocalCluster, dask-scheduler + dask-worker on several hosts, dask-jobqueue).

    import dask.dataframe as dd, clipeval.dask
    ddf = dd.read_json("shards/*.jsonl", lines=True)
    scored = clipeval.dask.score(ddf, model="openai/clip-vit-base-patch32",
                                 image_key="image", text_key="caption")

Each worker process loads the model once (the process-wide cache, clipeval.cached_model) and
reuses it for every partition it runs. Within a partition the scorer's semantics hold exactly
(dedup of images and texts, batching, 0.0 rules); across partitions nothing is shared, so an
image whose rows fall into several partitions is decoded and encoded once per partition.

The command `clipeval-dask` (main below) writes one scored file per input shard, atomically,
and skips shards whose output already exists (a rerun resumes an interrupted job).
"""
import argparse
import glob
import json
import os
import sys
import time
import uuid

from .model import DEFAULT_MODEL
from .scoring import Scorer, resolve_model, score_dataframe

_MODEL_KEYS = ("device", "threads", "precision")


# -------------------------------------------------------------------- dask DataFrames

def _score_partition(pdf, model, image_key, text_key, output_key, options):
    return score_dataframe(pdf, model, image_key, text_key, output_key, **options)


def score(ddf, model=DEFAULT_MODEL, image_key="image_path", text_key="text",
          output_key="clip_score", **options):
    """A dask DataFrame with `output_key` (float64) added to every partition: score_dataframe
    run by map_partitions. model: a folder / HF id (or a clipeval.Model, which travels as its
    specification); device=, threads=, precision= and the scoring options of score_dataframe
    apply. Each worker process loads the model once and keeps it for later partitions."""
    import pandas as pd
    for k in (image_key, text_key):
        if k not in ddf.columns:
            raise KeyError(f"column '{k}' not found (KeyError in DataFlow); columns: "
                           f"{list(ddf.columns)}")
    meta = ddf._meta.copy()
    meta[output_key] = pd.Series([], dtype="float64", index=meta.index)
    return ddf.map_partitions(_score_partition, model, image_key, text_key, output_key, options,
                              meta=meta, align_dataframes=False)


# -------------------------------------------------------------------- table files

FORMATS = ("jsonl", "json", "csv", "parquet", "pickle")


def table_type(path):
    """The table type of a path: the text after its last dot, as DataFlow's FileStorage."""
    t = os.path.basename(path).rsplit(".", 1)[-1].lower()
    if t not in FORMATS or "." not in os.path.basename(path):
        raise ValueError(f"{path}: unsupported table type '{t}' (expected one of "
                         f"{', '.join(FORMATS)})")
    return t


def read_table(path):
    """Reads a table as DataFlow's FileStorage does (jsonl: json.loads per non-blank line, then
    pd.DataFrame(records)); an invalid JSONL line is an error naming it, as for the CLI."""
    import pandas as pd
    t = table_type(path)
    if t == "jsonl":
        records = []
        with open(path, "r", encoding="utf-8") as f:
            for line_num, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_num}: invalid JSON: {e}") from None
        return pd.DataFrame(records)
    if t == "json":
        return pd.read_json(path)
    if t == "csv":
        return pd.read_csv(path)
    if t == "parquet":
        return pd.read_parquet(path)
    return pd.read_pickle(path)


def write_table(df, path, t):
    """Writes as DataFlow's FileStorage.write does."""
    if t == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif t == "json":
        df.to_json(path, orient="records", force_ascii=False, indent=2)
    elif t == "csv":
        df.to_csv(path, index=False)
    elif t == "parquet":
        df.to_parquet(path)
    elif t == "pickle":
        df.to_pickle(path)
    else:
        raise ValueError(f"unsupported table type '{t}'")


def output_path(input_path, output_dir, cache_type=None):
    name = os.path.basename(input_path)
    if cache_type:
        name = name.rsplit(".", 1)[0] + "." + cache_type
    return os.path.join(output_dir, name)


def _tmp_prefix(out_path, run_id):
    d, name = os.path.split(out_path)
    return os.path.join(d, f".{name}.tmp-{run_id}-")


def score_file(input_path, out_path, model=DEFAULT_MODEL, image_key="image_path",
               text_key="text", output_key="clip_score", *, run_id=None, on_shard=None,
               **options):
    """Scores one table file into out_path (written to a temporary file in the same folder,
    then renamed: the output is complete or absent). Returns the shard's statistics.
    on_shard(event, input_path, detail), when given, is called with "start" and, once the
    temporary file is written, "commit" (progress reports, tests)."""
    if on_shard:
        on_shard("start", input_path, None)
    t0 = time.monotonic()
    mopts = {k: options.pop(k) for k in _MODEL_KEYS if k in options}
    out_type = table_type(out_path)
    df = read_table(input_path)
    scorer = Scorer(resolve_model(model, **mopts), **options)
    out = score_dataframe(df, image_key=image_key, text_key=text_key, output_key=output_key,
                          inplace=True, scorer=scorer)
    tmp = _tmp_prefix(out_path, run_id or uuid.uuid4().hex[:12]) + str(os.getpid())
    try:
        write_table(out, tmp, out_type)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if on_shard:
            on_shard("commit", input_path, tmp)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    stats = dict(scorer.stats)
    stats.update(input=input_path, output=out_path, pid=os.getpid(),
                 seconds=time.monotonic() - t0)
    return stats


def expand_inputs(patterns):
    """Input shards from globs (sorted, duplicates removed); an unmatched pattern is an error."""
    paths = []
    for p in patterns:
        hits = sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if os.path.exists(p) else [])
        if not hits:
            raise FileNotFoundError(f"no input matches '{p}'")
        paths.extend(hits)
    seen, out = set(), []
    for p in paths:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            out.append(p)
    return out


def score_files(client, inputs, output_dir, model=DEFAULT_MODEL, image_key="image_path",
                text_key="text", output_key="clip_score", *, cache_type=None, force=False,
                on_shard=None, progress=None, **options):
    """Scores every input shard on the cluster behind `client`, one task per shard, each
    writing output_dir/<shard name> atomically. Shards whose output exists are skipped
    (unless force). A worker lost mid-shard (killed, preempted) loses nothing: the scheduler
    runs the shard again elsewhere and only a complete file is ever renamed into place.
    Returns {"done": [stats per shard], "skipped": [output paths]}."""
    if cache_type is not None and cache_type not in FORMATS:
        raise ValueError(f"cache_type '{cache_type}': expected one of {', '.join(FORMATS)}")
    # Workers resolve paths in their own current folder, maybe on another machine: send
    # absolute paths (the shared storage must show them at the same place everywhere).
    paths = [os.path.abspath(p) for p in
             expand_inputs(inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    output_dir = os.path.abspath(output_dir)
    if options.get("image_root"):
        options["image_root"] = os.path.abspath(options["image_root"])
    if isinstance(model, str) and os.path.isdir(model):
        model = os.path.abspath(model)
    os.makedirs(output_dir, exist_ok=True)
    outs = [output_path(p, output_dir, cache_type) for p in paths]
    if len(set(outs)) != len(outs):
        dup = sorted({o for o in outs if outs.count(o) > 1})
        raise ValueError(f"several input shards have the same output name: {dup}")
    for p, o in zip(paths, outs):
        table_type(p)
        table_type(o)
    todo = [(p, o) for p, o in zip(paths, outs) if force or not os.path.exists(o)]
    skipped = [o for p, o in zip(paths, outs) if (p, o) not in todo]
    run_id = uuid.uuid4().hex[:12]
    done = []
    if todo:
        from distributed import as_completed
        futures = [client.submit(score_file, p, o, model, image_key, text_key, output_key,
                                 run_id=run_id, on_shard=on_shard, pure=False,
                                 key=f"clipeval-shard-{run_id}-{i}", **options)
                   for i, (p, o) in enumerate(todo)]
        try:
            for fut in as_completed(futures):
                stats = fut.result()
                done.append(stats)
                if progress:
                    progress(stats, len(done), len(todo))
        except BaseException:
            client.cancel(futures)  # a shard failed: queued shards are not started
            raise
        finally:
            # temporaries of this run left by lost workers (never another run's)
            for _, o in todo:
                for t in glob.glob(glob.escape(_tmp_prefix(o, run_id)) + "*"):
                    try:
                        os.remove(t)
                    except OSError:
                        pass
    order = {o: i for i, (_, o) in enumerate(todo)}
    done.sort(key=lambda s: order[s["output"]])
    return {"done": done, "skipped": skipped}


# -------------------------------------------------------------------- the command

_HELP = """Scores table shards on a Dask cluster: one output file per input shard, written
atomically to --output-dir; shards whose output exists are skipped (rerun to resume).
--scheduler local[:N] starts a LocalCluster of N single-threaded worker processes on this
machine (default N: the number of cores); ADDRESS (tcp://host:8786) joins a running cluster
(dask-scheduler + dask-worker, dask-jobqueue); --scheduler-file PATH likewise."""


def _parser():
    p = argparse.ArgumentParser(prog="clipeval-dask", description=_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheduler", help="ADDRESS or local[:N] (default local)")
    p.add_argument("--scheduler-file", help="a Dask scheduler file (dask-scheduler "
                   "--scheduler-file)")
    p.add_argument("--input", action="extend", nargs="+", required=True,
                   help="input shard(s): paths or globs (quoted globs are expanded here, "
                   "unquoted ones by the shell); repeatable")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--image-key", default="image_path")
    p.add_argument("--text-key", default="text")
    p.add_argument("--output-key", default="clip_score")
    p.add_argument("--model", default=DEFAULT_MODEL, help="folder or HF model id; workers must "
                   "see the same path (shared storage)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads per worker's model (default: all "
                   "cores; local:N: cores / N)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cache-entries", type=int, default=65536)
    p.add_argument("--image-root", help="resolve relative image paths against this folder")
    p.add_argument("--cache-type", choices=FORMATS, help="output type (default: the input's)")
    p.add_argument("--max-text-bytes", type=int, default=0)
    p.add_argument("--max-pixels", type=int, default=0)
    p.add_argument("--max-file-bytes", type=int, default=0)
    p.add_argument("--exif-transpose", action="store_true")
    p.add_argument("--force", action="store_true", help="score every shard again")
    p.add_argument("--quiet", action="store_true")
    return p


def _local_cluster(n):
    from distributed import LocalCluster
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0")


def _message(e):
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)


def main(argv=None):
    args = _parser().parse_args(argv)
    from distributed import Client
    cluster = None
    threads = args.threads
    sched = args.scheduler or ("" if args.scheduler_file else "local")
    if args.scheduler and args.scheduler_file:
        print("clipeval-dask: give --scheduler or --scheduler-file, not both", file=sys.stderr)
        return 2
    if sched == "local" or sched.startswith("local:"):
        cores = os.cpu_count() or 1
        try:
            n = int(sched[6:]) if sched.startswith("local:") else cores
            if n < 1:
                raise ValueError
        except ValueError:
            print(f"clipeval-dask: bad --scheduler '{sched}' (local or local:N, N >= 1)",
                  file=sys.stderr)
            return 2
        if threads is None:
            threads = max(1, cores // n)
        cluster = _local_cluster(n)
        client = Client(cluster)
    elif args.scheduler_file:
        client = Client(scheduler_file=args.scheduler_file)
    else:
        client = Client(sched)
    opts = dict(device=args.device, threads=threads, precision=args.precision,
                batch_size=args.batch_size, cache_entries=args.cache_entries,
                image_root=args.image_root, max_text_bytes=args.max_text_bytes,
                max_pixels=args.max_pixels, max_file_bytes=args.max_file_bytes,
                exif_transpose=args.exif_transpose)

    def progress(s, k, total):
        if not args.quiet:
            print(f"clipeval-dask: [{k}/{total}] {s['input']}: {s['rows']} rows, {s['scored']} "
                  f"scored, {s['image_failed']} failed (image), {s['empty_text']} empty text; "
                  f"{s['images_encoded']} images + {s['texts_encoded']} texts encoded; "
                  f"{s['seconds']:.2f} s -> {s['output']}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    try:
        res = score_files(client, args.input, args.output_dir, args.model, args.image_key,
                          args.text_key, args.output_key, cache_type=args.cache_type,
                          force=args.force, progress=progress, **opts)
    except (OSError, ValueError, KeyError) as e:
        print(f"clipeval-dask: error: {_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a task's error, re-raised by the client
        print(f"clipeval-dask: error: {type(e).__name__}: {_message(e)}", file=sys.stderr)
        return 1
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    el = time.monotonic() - t0
    rows = sum(s["rows"] for s in res["done"])
    if not args.quiet:
        print(f"clipeval-dask: {len(res['done'])} shards scored ({rows} rows, "
              f"{sum(s['scored'] for s in res['done'])} scored, "
              f"{sum(s['image_failed'] for s in res['done'])} failed (image)), "
              f"{len(res['skipped'])} skipped (output present); {el:.2f} s, "
              f"{rows / el if el > 0 else 0.0:.1f} rows/s -> {args.output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
