#!/usr/bin/python3
"""End-to-end tests of `clipeval serve` on loopback (run by `make test`; CI also runs it with
--quick against the AddressSanitizer build).

Every server is started with --port 0 and is known to be ready when it prints
"listening on HOST:PORT". Nothing here waits for time to pass: ordering comes from the server's
own observable state (its /metrics, refused connections) and from a FIFO that holds the model
queue still (--test-hold-fifo). Every wait has a generous bound (BOUND seconds) so a broken
server fails the test instead of hanging it. Reference values come from `clipeval embed` and
`clipeval score` on the same inputs; embeddings and scores must agree within 1e-6.

Environment: CLIPEVAL_BUILD (the folder with clipeval), CLIPEVAL_SHARED (../shared), CI.
Standard library only (Debian's /usr/bin/python3)."""

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

BUILD = os.environ.get("CLIPEVAL_BUILD", "build")
CLI = os.path.abspath(os.path.join(BUILD, "clipeval"))
SHARED = os.environ.get("CLIPEVAL_SHARED", "")
UNDER_CI = os.environ.get("CI", "") in ("true", "1")
QUICK = "--quick" in sys.argv
BOUND = 300.0  # seconds: the most any single wait may take before the test fails
TOL = 1e-6
BODY_LIMIT = 8 << 20  # --max-body-bytes of the main server
MAX_ERR = {"embed": 0.0, "score": 0.0}  # measured, printed at the end

# ------------------------------------------------------------------ helpers


def png_bytes(w, h, seed):
    """A deterministic RGB PNG (stdlib only): a gradient that differs per seed."""
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            rows += bytes(((x * 7 + seed * 31) & 255, (y * 5 + seed * 17) & 255,
                           ((x ^ y) + seed * 13) & 255))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))


def zeros_png(w, h):
    """A black RGB PNG: large in pixels, small in bytes (for the pixel limit)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(bytes(h * (1 + 3 * w)), 9)) + chunk(b"IEND", b""))


def b64(data):
    return base64.b64encode(data).decode("ascii")


def read_npy(path):
    """float32 [N, D] .npy -> list of rows."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:6] == b"\x93NUMPY", path
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + hlen].decode("latin1")
    assert "'<f4'" in header, header
    shape = tuple(int(x) for x in re.search(r"\((\d+), (\d+)\)", header).groups())
    data = struct.unpack("<%df" % (shape[0] * shape[1]), raw[10 + hlen:])
    return [list(data[i * shape[1]:(i + 1) * shape[1]]) for i in range(shape[0])]


def max_err(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=BOUND, **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class Server:
    """A `clipeval serve` child process on a free loopback port."""

    def __init__(self, model, *args, env=None):
        self.err_path = tempfile.mktemp(prefix="clipeval-serve-", suffix=".log")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([CLI, "serve", "--model", model, "--port", "0",
                                      "--device", "cpu", *args],
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     env=env or os.environ.copy())
        line = self._readline()
        m = re.search(r"listening on (\S+):(\d+)$", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not start: %r\n%s" % (line, self.log()))
        self.host, self.port = m.group(1).strip("[]"), int(m.group(2))

    def _readline(self):
        out = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()))
        t.daemon = True
        t.start()
        t.join(BOUND)
        return out[0].decode().strip() if out else ""

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM):
        """Sends sig and returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop after %s:\n%s" % (sig, self.log()))
        self.proc.stdout.close()
        self.err.close()
        return rc

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.err_path)
        except OSError:
            pass

    def request(self, method, path, body=None, headers=None, conn=None):
        """-> (status, headers dict (lower-case names), body bytes). One connection per call
        unless conn is given."""
        c = conn or http.client.HTTPConnection(self.host, self.port, timeout=BOUND)
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
        except BaseException:
            if conn is None:
                c.close()  # a refused upload must not leave its socket open
            raise
        h = {k.lower(): v for k, v in r.getheaders()}
        if conn is None:
            c.close()
        return r.status, h, data

    def post(self, path, body, **kw):
        st, h, data = self.request("POST", path, body, **kw)
        try:
            js = json.loads(data)
        except ValueError:
            js = None
        return st, h, js

    def metric(self, name, headers=None):
        """Value of one sample of /metrics, e.g. 'clipeval_queue_depth{modality="text"}'."""
        st, _, data = self.request("GET", "/metrics", headers=headers)
        assert st == 200, st
        for line in data.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError("metric %s missing" % name)

    def wait_metric(self, name, value):
        """Polls /metrics until the sample equals value (the state, not the clock, orders us)."""
        end = time.monotonic() + BOUND
        while time.monotonic() < end:
            if self.metric(name) == value:
                return
            time.sleep(0.01)
        raise AssertionError("%s never reached %s" % (name, value))


def check_error(tc, st, js, status, param=None, contains=None):
    tc.assertEqual(st, status, js)
    tc.assertIsInstance(js, dict)
    e = js["error"]
    tc.assertIsInstance(e["message"], str)
    tc.assertEqual(e["type"], {429: "overloaded", 500: "server_error", 503: "server_error"}
                   .get(status, "invalid_request_error"))
    if param is not None:
        tc.assertEqual(e["param"], param, e)
        tc.assertIn(param, e["message"])
    if contains:
        tc.assertIn(contains, e["message"])


# ------------------------------------------------------------------ fixture

FX = {}


def setUpModule():
    if not os.path.exists(CLI):
        raise AssertionError("CLI not built: %s" % CLI)
    tiny = os.path.join(SHARED, "golden/models/tiny-synth")
    tok = os.path.join(SHARED, "models/clip-vit-base-patch32")
    if not SHARED or not os.path.isdir(tiny) or not os.path.isdir(tok):
        if UNDER_CI:
            raise AssertionError("shared test data not found (CLIPEVAL_SHARED=%r) and CI=true"
                                 % SHARED)
        raise unittest.SkipTest("shared test data not found: set CLIPEVAL_SHARED")
    tmp = tempfile.mkdtemp(prefix="clipeval-serve-test-")
    FX["tmp"] = tmp
    model = os.path.join(tmp, "tiny")
    os.mkdir(model)
    for f in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(tiny, f), os.path.join(model, f))
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        os.symlink(os.path.join(tok, f), os.path.join(model, f))
    with open(os.path.join(model, "preprocessor_config.json"), "w") as f:
        json.dump({"crop_size": 32, "do_center_crop": True, "do_normalize": True,
                   "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
                   "size": 32}, f)
    FX["model"] = model
    # images: 16 distinct generated PNGs + the DataFlow example's 3 real ones
    imgdir = os.path.join(tmp, "images")
    os.mkdir(imgdir)
    paths = []
    for i in range(16):
        p = os.path.join(imgdir, "gen%02d.png" % i)
        with open(p, "wb") as f:
            f.write(png_bytes(40 + i, 36 + 2 * i, i))
        paths.append(p)
    example = os.path.join(SHARED, "data/dataflow_example/images")
    for name in ("0.png", "1.png", "2.png"):
        if os.path.exists(os.path.join(example, name)):
            paths.append(os.path.join(example, name))
    with open(os.path.join(imgdir, "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nthis is not a png")
    os.symlink("/etc/hostname", os.path.join(imgdir, "escape.png"))
    FX["imgdir"], FX["images"] = imgdir, paths
    FX["bytes"] = []
    for p in paths:
        with open(p, "rb") as f:
            FX["bytes"].append(f.read())
    FX["image_ref"] = cli_embed(images=paths)
    FX["server"] = Server(model, "--max-batch", "8", "--max-queue", "256", "--max-body-bytes",
                          "8MiB", "--allow-paths", imgdir, "--threads", "1",
                          "--max-image-pixels", "2000000")


def tearDownModule():
    s = FX.get("server")
    if s:
        try:
            rc = s.stop()
            log = s.log()
            assert rc == 0, "server exited %d:\n%s" % (rc, log)
            assert "ERROR: AddressSanitizer" not in log and "runtime error" not in log, log
        finally:
            s.cleanup()
    if FX.get("tmp"):
        shutil.rmtree(FX["tmp"], ignore_errors=True)
    print("serve tests: max |server - CLI| embeddings %.3g, scores %.3g (tolerance %g)"
          % (MAX_ERR["embed"], MAX_ERR["score"], TOL), file=sys.stderr)


def cli_embed(texts=None, images=None):
    out = tempfile.mktemp(suffix=".npy", dir=FX["tmp"])
    cmd = [CLI, "embed", "--model", FX["model"], "--device", "cpu", "--out", out]
    if texts is not None:
        tf = tempfile.mktemp(suffix=".jsonl", dir=FX["tmp"])
        with open(tf, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        cmd += ["--texts-file", tf]
    else:
        cmd += ["--images", *images]
    rc, _, err = run(cmd)
    assert rc == 0, err
    rows = read_npy(out)
    os.unlink(out)
    return rows


def cli_score(rows):
    """rows: [(image_path, text)] -> clip_score list from `clipeval score`."""
    inp = tempfile.mktemp(suffix=".jsonl", dir=FX["tmp"])
    out = tempfile.mktemp(suffix=".jsonl", dir=FX["tmp"])
    with open(inp, "w", encoding="utf-8") as f:
        for p, t in rows:
            f.write(json.dumps({"image_path": p, "text": t}) + "\n")
    rc, _, err = run([CLI, "score", "--input", inp, "--output", out, "--model", FX["model"],
                      "--device", "cpu", "--quiet"])
    assert rc == 0, err
    with open(out, encoding="utf-8") as f:
        return [json.loads(line)["clip_score"] for line in f if line.strip()]


def embeddings_of(tc, js, n):
    tc.assertEqual(js["object"], "list")
    tc.assertEqual([d["index"] for d in js["data"]], list(range(n)))
    for d in js["data"]:
        tc.assertEqual(d["object"], "embedding")
    return [d["embedding"] for d in js["data"]]


def expect_close(tc, got, ref, what="embed"):
    for g, r in zip(got, ref):
        e = max_err(g, r)
        MAX_ERR[what] = max(MAX_ERR[what], e)
        tc.assertLessEqual(e, TOL)


# ------------------------------------------------------------------ correctness


class Correctness(unittest.TestCase):
    def test_health_models_metrics(self):
        s = FX["server"]
        st, h, data = s.request("GET", "/health")
        self.assertEqual((st, json.loads(data)), (200, {"status": "ok"}))
        self.assertEqual(h["content-type"], "application/json")
        st, _, data = s.request("GET", "/v1/models")
        js = json.loads(data)
        self.assertEqual(st, 200)
        self.assertEqual(js["data"][0]["id"], FX["model"])
        self.assertEqual(js["data"][0]["embedding_dim"], 40)
        self.assertEqual(js["data"][0]["precision"], "fp32")
        st, h, data = s.request("HEAD", "/health")
        self.assertEqual((st, data), (200, b""))
        st, h, data = s.request("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
        text = data.decode()
        for name in ("clipeval_requests_total", "clipeval_request_duration_seconds_bucket",
                     "clipeval_batch_size_bucket", "clipeval_queue_depth",
                     "clipeval_inputs_total", "clipeval_encoded_total",
                     "clipeval_batch_duration_seconds_bucket", "clipeval_requests_in_flight"):
            self.assertIn("# TYPE " + name.replace("_bucket", ""), text)
        self.assertRegex(text, r'clipeval_requests_total\{endpoint="/health",status="200"\} \d+')

    def test_texts_equal_cli(self):
        texts = ["a photo of a cat", "", "UPPER case & punctuation!!", "émigré naïve 北京 🙂",
                 "word " * 120, "  leading and trailing  ", "a photo of a cat"]
        ref = cli_embed(texts=texts)
        st, _, js = FX["server"].post("/v1/embeddings", {"model": "whatever", "input": texts})
        self.assertEqual(st, 200, js)
        expect_close(self, embeddings_of(self, js, len(texts)), ref)
        self.assertGreater(js["usage"]["prompt_tokens"], 0)
        self.assertEqual(js["usage"]["prompt_tokens"], js["usage"]["total_tokens"])
        self.assertEqual(js["model"], FX["model"])
        # a single string, and {"text": ...}
        st, _, js = FX["server"].post("/v1/embeddings", {"input": texts[3]})
        self.assertEqual(st, 200, js)
        expect_close(self, embeddings_of(self, js, 1), [ref[3]])
        st, _, js = FX["server"].post("/v1/embeddings", {"input": [{"text": texts[2]}]})
        expect_close(self, embeddings_of(self, js, 1), [ref[2]])
        # usage: BOS + tokens + EOS, truncated to 77
        st, _, js = FX["server"].post("/v1/embeddings", {"input": ["word " * 120, "a"]})
        self.assertEqual(js["usage"]["prompt_tokens"], 77 + 3)

    def test_images_equal_cli(self):
        imgs, ref = FX["bytes"], FX["image_ref"]
        inputs = []
        for i, data in enumerate(imgs):
            inputs.append({"image": b64(data)} if i % 2 else "data:image/png;base64," + b64(data))
        st, _, js = FX["server"].post("/v1/embeddings", {"input": inputs})
        self.assertEqual(st, 200, js)
        expect_close(self, embeddings_of(self, js, len(imgs)), ref)
        self.assertEqual(js["usage"]["prompt_tokens"], 0)
        # server-side paths inside --allow-paths: relative and absolute
        st, _, js = FX["server"].post("/v1/embeddings", {"input": [
            {"image_path": "gen03.png"}, {"image_path": os.path.join(FX["imgdir"], "gen04.png")}]})
        self.assertEqual(st, 200, js)
        expect_close(self, embeddings_of(self, js, 2), ref[3:5])
        # MIME-wrapped base64 (newlines) decodes the same
        wrapped = "\n".join(b64(imgs[5])[i:i + 76] for i in range(0, len(b64(imgs[5])), 76))
        st, _, js = FX["server"].post("/v1/embeddings", {"input": [{"image": wrapped}]})
        expect_close(self, embeddings_of(self, js, 1), [ref[5]])

    def test_mixed_order_and_base64_encoding(self):
        texts = ["first", "second"]
        tref = cli_embed(texts=texts)
        inputs = ["first", {"image": b64(FX["bytes"][0])}, "second", {"image": b64(FX["bytes"][1])}]
        ref = [tref[0], FX["image_ref"][0], tref[1], FX["image_ref"][1]]
        st, _, js = FX["server"].post("/v1/embeddings", {"input": inputs})
        got = embeddings_of(self, js, 4)
        expect_close(self, got, ref)
        st, _, jb = FX["server"].post("/v1/embeddings",
                                      {"input": inputs, "encoding_format": "base64"})
        self.assertEqual(st, 200, jb)
        for d, g in zip(jb["data"], got):
            raw = base64.b64decode(d["embedding"])
            vals = struct.unpack("<%df" % (len(raw) // 4), raw)
            self.assertEqual(len(vals), 40)
            # the JSON numbers are %.9g: they round-trip float32 exactly
            self.assertEqual(list(vals), [struct.unpack("<f", struct.pack("<f", x))[0] for x in g])

    def test_identical_inputs_encoded_once(self):
        s = FX["server"]
        before_in = s.metric('clipeval_inputs_total{modality="text"}')
        before_enc = s.metric('clipeval_encoded_total{modality="text"}')
        st, _, js = s.post("/v1/embeddings", {"input": ["same text"] * 4})
        self.assertEqual(st, 200)
        got = embeddings_of(self, js, 4)
        self.assertTrue(all(g == got[0] for g in got))
        # one request's inputs are queued together, so they share a model call
        self.assertEqual(s.metric('clipeval_inputs_total{modality="text"}') - before_in, 4)
        self.assertEqual(s.metric('clipeval_encoded_total{modality="text"}') - before_enc, 1)

    def test_score_equals_cli(self):
        paths = FX["images"]
        broken = os.path.join(FX["imgdir"], "broken.png")
        missing = os.path.join(FX["imgdir"], "missing.png")
        rows = [(paths[0], "a red gradient"), (paths[1], "  \t "), (paths[2], ""),
                (broken, "a broken image"), (broken, " "), (paths[-1], "a photo"),
                (paths[3], "a red gradient"), (missing, "not there")]
        ref = cli_score(rows)
        pairs = []
        for i, (p, t) in enumerate(rows):
            if p == missing:
                pairs.append({"image_path": "missing.png", "text": t})
            else:
                with open(p, "rb") as f:
                    data = f.read()
                pairs.append({"image": b64(data) if i % 2 else
                              "data:image/png;base64," + b64(data), "text": t})
        st, _, js = FX["server"].post("/v1/score", {"pairs": pairs})
        self.assertEqual(st, 200, js)
        self.assertEqual(len(js["scores"]), len(rows))
        for g, r in zip(js["scores"], ref):
            MAX_ERR["score"] = max(MAX_ERR["score"], abs(g - r))
            self.assertLessEqual(abs(g - r), TOL)
        errs = js["errors"]
        self.assertIsNone(errs[0])
        self.assertEqual((js["scores"][1], errs[1]), (0.0, None))  # blank text: no reason
        self.assertEqual((js["scores"][2], errs[2]), (0.0, None))
        self.assertEqual(js["scores"][3], 0.0)
        self.assertIn("PNG", errs[3])  # unreadable image: a reason
        self.assertIsNotNone(errs[4])  # checked before the text, as DataFlow does
        self.assertIn("No such file", errs[7])
        self.assertTrue(all(0.0 <= x <= 1.0 for x in js["scores"]))


# ------------------------------------------------------------------ errors


class Errors(unittest.TestCase):
    def post(self, body, path="/v1/embeddings", **kw):
        return FX["server"].post(path, body, **kw)

    def test_malformed_bodies(self):
        st, _, js = self.post(b"{\"input\": [")
        check_error(self, st, js, 400, contains="malformed JSON")
        st, _, js = self.post(b"")
        check_error(self, st, js, 400, contains="malformed JSON")
        st, _, js = self.post(b"{\"input\": \"\xff\xfe\"}")
        check_error(self, st, js, 400, contains="malformed JSON")
        st, _, js = self.post([1, 2])
        check_error(self, st, js, 400, contains="JSON object")
        st, _, js = self.post({"model": "m"})
        check_error(self, st, js, 400, "input")
        st, _, js = self.post({"input": []})
        check_error(self, st, js, 400, "input", "must not be empty")
        st, _, js = self.post({"input": 5})
        check_error(self, st, js, 400, "input")
        st, _, js = self.post({"input": [[1, 2, 3]]})
        check_error(self, st, js, 400, "input[0]", "token id arrays")
        st, _, js = self.post({"input": ["ok", None]})
        check_error(self, st, js, 400, "input[1]")
        st, _, js = self.post({"input": [{"text": "a", "image": "b"}]})
        check_error(self, st, js, 400, "input[0]", "exactly one")
        st, _, js = self.post({"input": [{"text": 3}]})
        check_error(self, st, js, 400, "input[0].text")
        st, _, js = self.post({"input": "a", "encoding_format": "hex"})
        check_error(self, st, js, 400, "encoding_format")
        st, _, js = self.post({"input": "a", "dimensions": 512})
        check_error(self, st, js, 400, "dimensions")
        st, _, js = self.post({"input": "a", "model": 3})
        check_error(self, st, js, 400, "model")
        deep = "[" * 40 + "]" * 40
        st, _, js = self.post(('{"input": %s}' % deep).encode())
        check_error(self, st, js, 400, contains="malformed JSON")

    def test_bad_images_name_the_item(self):
        good = b64(FX["bytes"][0])
        st, _, js = self.post({"input": ["t", {"image": good}, {"image": "abc$def"}]})
        check_error(self, st, js, 400, "input[2].image", "invalid base64")
        st, _, js = self.post({"input": [{"image": "abcde"}]})
        check_error(self, st, js, 400, "input[0].image", "invalid base64")
        st, _, js = self.post({"input": [{"image": "QQ=A"}]})
        check_error(self, st, js, 400, "input[0].image", "invalid base64")
        st, _, js = self.post({"input": [{"image": ""}]})
        check_error(self, st, js, 400, "input[0].image", "empty image")
        st, _, js = self.post({"input": ["data:text/plain;base64,aGVsbG8="]})
        check_error(self, st, js, 400, "input[0]", "not an image")
        st, _, js = self.post({"input": ["data:image/png,raw"]})
        check_error(self, st, js, 400, "input[0]", "only base64 data URIs")
        st, _, js = self.post({"input": [{"image": "https://example.com/a.png"}]})
        check_error(self, st, js, 400, "input[0].image", "URLs are not fetched")
        st, _, js = self.post({"input": ["x", {"image": b64(b"GIF89a not really")}]})
        check_error(self, st, js, 400, "input[1]", "cannot use the image")
        # 4 megapixels, over --max-image-pixels 2000000
        st, _, js = self.post({"input": [{"image": b64(zeros_png(2000, 2000))}]})
        check_error(self, st, js, 400, "input[0]", "pixels")
        st, _, js = self.post({"input": [{"image": b64(zeros_png(1000, 1000))}]})
        self.assertEqual(st, 200, js)

    def test_paths_stay_inside_allow_paths(self):
        for p, why in (("/etc/hostname", "outside"), ("../images/gen00.png", "'..'"),
                       ("escape.png", "leads outside"), ("missing.png", "No such file")):
            st, _, js = self.post({"input": [{"image_path": p}]})
            check_error(self, st, js, 400, "input[0].image_path", why)
        st, _, js = self.post({"pairs": [{"image_path": "/etc/hostname", "text": "a"}]},
                              path="/v1/score")
        check_error(self, st, js, 400, "pairs[0].image_path", "outside")

    def test_score_errors(self):
        good = b64(FX["bytes"][0])
        for body, param in (({"pairs": "x"}, "pairs"), ({}, "pairs"), ({"pairs": []}, "pairs"),
                            ({"pairs": [3]}, "pairs[0]"),
                            ({"pairs": [{"image": good}]}, "pairs[0].text"),
                            ({"pairs": [{"image": good, "text": 5}]}, "pairs[0].text"),
                            ({"pairs": [{"text": "a"}]}, "pairs[0]"),
                            ({"pairs": [{"image": good, "text": "a"}, {"image": "%%", "text": "b"}]},
                             "pairs[1].image"),
                            ({"pairs": [{"image": 7, "text": "a"}]}, "pairs[0].image")):
            st, _, js = self.post(body, path="/v1/score")
            check_error(self, st, js, 400, param)

    def test_routes_and_methods(self):
        s = FX["server"]
        st, h, data = s.request("GET", "/v2/nothing")
        check_error(self, st, json.loads(data), 404)
        st, h, data = s.request("GET", "/v1/embeddings")
        check_error(self, st, json.loads(data), 405)
        self.assertEqual(h["allow"], "POST")
        st, h, data = s.request("POST", "/health", b"{}")
        check_error(self, st, json.loads(data), 405)
        self.assertEqual(h["allow"], "GET, HEAD")
        st, h, data = s.request("PUT", "/v1/score", b"{}")
        self.assertEqual(st, 405)

    def test_body_limits(self):
        s = FX["server"]
        # declared too large: answered before the body is sent
        sk = socket.create_connection((s.host, s.port), timeout=BOUND)
        sk.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                   b"\r\nContent-Length: 1073741824\r\n\r\n")
        resp = recv_response(sk)
        sk.close()
        self.assertTrue(resp.startswith(b"HTTP/1.1 413"), resp[:200])
        self.assertIn(b"--max-body-bytes", resp)
        # just over the limit with Content-Length (http.client sends it all)
        body = b'{"input": "' + b"a" * BODY_LIMIT + b'"}'
        try:
            st, _, js = s.post("/v1/embeddings", body)
            check_error(self, st, js, 413)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before the body is all sent: also a refusal
        # chunked: no length up front, refused once past the limit
        def chunks():
            yield b'{"input": "'
            for _ in range(BODY_LIMIT // 65536 + 1):
                yield b"b" * 65536
            yield b'"}'
        c = http.client.HTTPConnection(s.host, s.port, timeout=BOUND)
        c.request("POST", "/v1/embeddings", body=chunks(), encode_chunked=True,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        js = json.loads(r.read())
        c.close()
        check_error(self, r.status, js, 413)
        # a chunked body under the limit works
        c = http.client.HTTPConnection(s.host, s.port, timeout=BOUND)
        c.request("POST", "/v1/embeddings", body=iter([b'{"input":', b' "chunked"}']),
                  encode_chunked=True)
        r = c.getresponse()
        self.assertEqual(r.status, 200, r.read())
        c.close()

    def test_too_many_inputs(self):
        st, _, js = self.post({"input": ["t"] * 257})
        check_error(self, st, js, 413, "input", "--max-queue")
        # many values: refused before they are parsed (no memory blow-up)
        st, _, js = self.post(b'{"input": [' + b"0," * 100000 + b'0]}')
        check_error(self, st, js, 413, contains="JSON values")


def recv_response(sk):
    data = b""
    while True:
        try:
            b = sk.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        data += b
        m = re.search(rb"Content-Length: (\d+)\r\n", data, re.I)
        end = data.find(b"\r\n\r\n")
        if m and end >= 0 and len(data) >= end + 4 + int(m.group(1)):
            break
    return data


# ------------------------------------------------------------------ concurrency


class Concurrency(unittest.TestCase):
    def test_many_clients_mixed(self):
        s = FX["server"]
        clients, per = (16, 10) if QUICK else (64, 50)
        texts = ["caption %d of client %d" % (i, c) for c in range(clients) for i in range(per)]
        tref = dict(zip(texts, cli_embed(texts=texts)))
        imgs = FX["bytes"][:16]
        iref = FX["image_ref"][:16]
        failures = []

        def client(c):
            conn = http.client.HTTPConnection(s.host, s.port, timeout=BOUND)
            try:
                for i in range(per):
                    t = "caption %d of client %d" % (i, c)
                    k = (c * 7 + i) % len(imgs)
                    kind = (c + i) % 3
                    if kind == 0:
                        inputs, ref = t, [tref[t]]
                    elif kind == 1:
                        inputs, ref = [{"image": b64(imgs[k])}, t], [iref[k], tref[t]]
                    else:
                        inputs, ref = ["data:image/png;base64," + b64(imgs[k])], [iref[k]]
                    st, _, data = s.request("POST", "/v1/embeddings",
                                            json.dumps({"input": inputs}).encode(), conn=conn)
                    if st != 200:
                        failures.append((c, i, st, data[:200]))
                        return
                    got = [d["embedding"] for d in json.loads(data)["data"]]
                    errs = [max_err(g, r) for g, r in zip(got, ref)]
                    MAX_ERR["embed"] = max(MAX_ERR["embed"], *errs)
                    if len(got) != len(ref) or max(errs) > TOL:
                        failures.append((c, i, "mismatch", errs))
                        return
            except Exception as e:  # reported below, in the main thread
                failures.append((c, "exception", repr(e)))
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND)
        self.assertFalse(any(t.is_alive() for t in threads), "clients did not finish")
        self.assertEqual(failures, [])
        st, _, _ = s.request("GET", "/health")
        self.assertEqual(st, 200)


# ------------------------------------------------------------------ API key, start-up


class ApiKey(unittest.TestCase):
    def test_key_required(self):
        keyf = os.path.join(FX["tmp"], "key.txt")
        with open(keyf, "w") as f:
            f.write("  s3cret-Key_1  \n")
        s = Server(FX["model"], "--api-key-file", keyf)
        try:
            body = {"input": "a"}
            st, h, js = s.post("/v1/embeddings", body)
            check_error(self, st, js, 401)
            self.assertEqual(h["www-authenticate"], "Bearer")
            for wrong in ("Bearer s3cret-Key_2", "Bearer s3cret-Key_1x", "Bearer s3cret",
                          "Basic s3cret-Key_1", "s3cret-Key_1"):
                st, _, js = s.post("/v1/embeddings", body, headers={"Authorization": wrong})
                check_error(self, st, js, 401)
            st, _, js = s.post("/v1/embeddings", body,
                               headers={"Authorization": "Bearer s3cret-Key_1"})
            self.assertEqual(st, 200, js)
            st, _, js = s.post("/v1/score", {"pairs": []})
            check_error(self, st, js, 401)
            self.assertEqual(s.request("GET", "/health")[0], 200)
            self.assertEqual(s.request("GET", "/metrics")[0], 401)
            self.assertEqual(s.request("GET", "/v1/models")[0], 401)
            self.assertEqual(s.request("GET", "/metrics", headers={
                "Authorization": "bearer s3cret-Key_1"})[0], 200)
            self.assertEqual(s.stop(), 0, s.log())
        finally:
            s.cleanup()


class Startup(unittest.TestCase):
    def serve(self, *args):
        return run([CLI, "serve", "--port", "0", *args], stdin=subprocess.DEVNULL)

    def test_usage_errors(self):
        m = FX["model"]
        for args, msg in ((["--bogus"], "unknown"), (["--port", "70000"], "--port"),
                          (["--port"], "incomplete"), (["--max-batch", "0"], "--max-batch"),
                          (["--max-body-bytes", "12X"], "--max-body-bytes"),
                          (["--device", "tpu"], "--device"), (["--precision", "fp8"], "fp8"),
                          (["--max-queue", "-1"], "--max-queue"),
                          (["--max-wait-ms", "x"], "--max-wait-ms")):
            rc, out, err = self.serve("--model", m, *args)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn(msg, err)
        rc, out, err = self.serve("--help")
        self.assertEqual(rc, 0)
        self.assertIn("/v1/embeddings", out)
        self.assertIn("--max-queue", out)

    def test_start_failures(self):
        m = FX["model"]
        empty = os.path.join(FX["tmp"], "empty-key")
        open(empty, "w").close()
        spaced = os.path.join(FX["tmp"], "spaced-key")
        with open(spaced, "w") as f:
            f.write("two words\n")
        fp16 = self.serve("--model", m, "--precision", "fp16")  # not on a CPU
        self.assertEqual(fp16[0], 1, fp16)
        self.assertIn("fp16", fp16[2].lower())
        for args, msg in ((["--model", os.path.join(FX["tmp"], "nope")], "error"),
                          (["--model", m, "--api-key-file", "/nonexistent/key"], "api-key-file"),
                          (["--model", m, "--api-key-file", empty], "empty"),
                          (["--model", m, "--api-key-file", spaced], "printable"),
                          (["--model", m, "--allow-paths", "/nonexistent/dir"], "allow-paths"),
                          (["--model", m, "--host", "no.such.host.invalid"], "--host"),
                          (["--model", m, "--test-hold-fifo", "/nonexistent/fifo"], "fifo"),
                          (["--model", m, "--ready-file", "/nonexistent/dir/ready"],
                           "ready-file")):
            rc, out, err = self.serve(*args)
            self.assertEqual(rc, 1, (args, err))
            self.assertIn(msg, err)
        # a model folder whose preprocessor does not fit the model, or without a tokenizer
        bad = os.path.join(FX["tmp"], "badcrop")
        os.mkdir(bad)
        for f in os.listdir(m):
            if f != "preprocessor_config.json":
                os.symlink(os.path.join(m, f), os.path.join(bad, f))
        with open(os.path.join(bad, "preprocessor_config.json"), "w") as f:
            json.dump({"crop_size": 48, "size": 48}, f)
        rc, out, err = self.serve("--model", bad)
        self.assertEqual(rc, 1, err)
        self.assertIn("crop size", err)
        notok = os.path.join(FX["tmp"], "notok")
        os.mkdir(notok)
        for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
            os.symlink(os.path.join(m, f), os.path.join(notok, f))
        rc, out, err = self.serve("--model", notok)
        self.assertEqual(rc, 1, err)
        self.assertIn("error", err)
        # the port is taken
        s = FX["server"]
        rc, out, err = run([CLI, "serve", "--model", m, "--port", str(s.port)])
        self.assertEqual(rc, 1, err)
        self.assertIn("cannot listen", err)

    def test_openmp_waits_passively_unless_chosen(self):
        env = os.environ.copy()
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("GOMP_SPINCOUNT", None)
        for policy, expect in ((None, "OMP_WAIT_POLICY=PASSIVE"), ("active", "OMP_WAIT_POLICY=active")):
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            s = Server(FX["model"], env=env)
            try:
                self.assertIn(expect, s.log())
                with open("/proc/%d/environ" % s.proc.pid, "rb") as f:
                    self.assertIn(expect.encode(), f.read().split(b"\0"))
                self.assertEqual(s.request("GET", "/health")[0], 200)
                self.assertEqual(s.stop(), 0, s.log())  # the same process: it re-executed
            finally:
                s.cleanup()

    def test_ready_file(self):
        ready = os.path.join(FX["tmp"], "ready.txt")
        s = Server(FX["model"], "--ready-file", ready, "--host", "localhost")
        try:
            with open(ready) as f:
                self.assertEqual(f.read().strip().rsplit(":", 1)[1], str(s.port))
            self.assertEqual(s.request("GET", "/health")[0], 200)
            self.assertEqual(s.stop(signal.SIGINT), 0)
        finally:
            s.cleanup()


# ------------------------------------------------------------------ overload and lifecycle


class Held:
    """A server whose model calls wait for bytes on a FIFO: its queue stays put until released."""

    def __init__(self, *args):
        self.fifo = tempfile.mktemp(prefix="hold-", dir=FX["tmp"])
        os.mkfifo(self.fifo)
        self.s = Server(FX["model"], "--test-hold-fifo", self.fifo, *args)
        self.results = {}
        self.threads = []

    def send(self, name, body, path="/v1/embeddings"):
        def go():
            try:
                self.results[name] = self.s.post(path, body)
            except Exception as e:
                self.results[name] = (None, None, repr(e))
        t = threading.Thread(target=go)
        t.start()
        self.threads.append(t)

    def release(self):
        fd = os.open(self.fifo, os.O_WRONLY)
        os.write(fd, b"rr")
        os.close(fd)

    def join(self):
        for t in self.threads:
            t.join(BOUND)
        assert not any(t.is_alive() for t in self.threads)


class Overload(unittest.TestCase):
    def test_full_queue_gives_429_then_recovers(self):
        h = Held("--max-queue", "4", "--max-batch", "2")
        s = h.s
        try:
            h.send("a", {"input": ["held one"]})
            s.wait_metric('clipeval_queue_depth{modality="text"}', 1)
            h.send("b", {"input": ["held two", "held three", "held four"]})
            s.wait_metric('clipeval_queue_depth{modality="text"}', 4)
            st, hdr, js = s.post("/v1/embeddings", {"input": "one too many"})
            check_error(self, st, js, 429, contains="overloaded")
            self.assertEqual(hdr["retry-after"], "1")
            st, hdr, js = s.post("/v1/score", {"pairs": [{"image": b64(FX["bytes"][0]),
                                                          "text": "x"}]})
            check_error(self, st, js, 429)
            st, _, js = s.post("/v1/embeddings", {"input": ["t"] * 5})
            check_error(self, st, js, 413, "input")
            self.assertEqual(s.request("GET", "/health")[0], 200)
            h.release()
            h.join()
            ref = cli_embed(texts=["held one", "held two", "held three", "held four"])
            self.assertEqual(h.results["a"][0], 200, h.results["a"])
            self.assertEqual(h.results["b"][0], 200, h.results["b"])
            got = embeddings_of(self, h.results["a"][2], 1) + embeddings_of(self, h.results["b"][2], 3)
            expect_close(self, got, ref)
            self.assertGreaterEqual(
                s.metric('clipeval_requests_total{endpoint="/v1/embeddings",status="429"}'), 1)
            # a burst past the queue: every answer is 200 or 429, and the server stays healthy
            statuses = []
            burst = 8 if QUICK else 32

            def one(i):
                st, hd, js = s.post("/v1/embeddings", {"input": ["burst %d" % i] * 3})
                statuses.append((st, hd.get("retry-after")))
            ts = [threading.Thread(target=one, args=(i,)) for i in range(burst)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(BOUND)
            self.assertEqual(len(statuses), burst)
            self.assertTrue(all(st == 200 or (st == 429 and ra == "1") for st, ra in statuses),
                            statuses)
            self.assertEqual(s.request("GET", "/health")[0], 200)
            self.assertEqual(s.stop(), 0, s.log())
        finally:
            s.cleanup()


class Lifecycle(unittest.TestCase):
    def test_sighup_is_harmless(self):
        s = FX["server"]
        s.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + BOUND
        while "SIGHUP" not in s.log() and time.monotonic() < end:
            time.sleep(0.01)
        self.assertIn("SIGHUP", s.log())
        self.assertEqual(s.request("GET", "/health")[0], 200)
        st, _, js = s.post("/v1/embeddings", {"input": "still here"})
        self.assertEqual(st, 200)

    def test_sigterm_drains_in_flight_requests(self):
        h = Held()
        s = h.s
        try:
            keep = http.client.HTTPConnection(s.host, s.port, timeout=BOUND)
            self.assertEqual(s.request("GET", "/health", conn=keep)[0], 200)
            h.send("a", {"input": ["in flight"]})
            s.wait_metric('clipeval_queue_depth{modality="text"}', 1)
            s.proc.send_signal(signal.SIGTERM)
            wait_refused(s)
            # an open keep-alive connection gets 503 and is closed
            st, hd, data = s.request("GET", "/health", conn=keep)
            self.assertEqual(st, 503)
            self.assertEqual(hd.get("connection"), "close")
            keep.close()
            self.assertIsNone(s.proc.poll())  # still draining: the request is in flight
            h.release()
            h.join()
            self.assertEqual(h.results["a"][0], 200, h.results["a"])
            expect_close(self, embeddings_of(self, h.results["a"][2], 1),
                         cli_embed(texts=["in flight"]))
            self.assertEqual(s.stop(), 0, s.log())
            self.assertIn("draining", s.log())
        finally:
            s.cleanup()

    def test_drain_timeout_cancels_queued(self):
        h = Held("--drain-timeout", "0")
        s = h.s
        try:
            h.send("a", {"input": ["never encoded"]})
            s.wait_metric('clipeval_queue_depth{modality="text"}', 1)
            self.assertEqual(s.stop(), 0, s.log())
            h.join()
            st, _, js = h.results["a"]
            check_error(self, st, js, 503, contains="shutting down")
            self.assertIn("cancelling", s.log())
        finally:
            s.cleanup()


def wait_refused(s):
    """After SIGTERM the listening socket closes: new connections are refused."""
    end = time.monotonic() + BOUND
    while time.monotonic() < end:
        try:
            socket.create_connection((s.host, s.port), timeout=BOUND).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # it was in the backlog of the socket being closed: try again
        time.sleep(0.01)
    raise AssertionError("the server kept accepting connections after SIGTERM")


# ------------------------------------------------------------------ survival


class Survival(unittest.TestCase):
    def test_connection_limit(self):
        s = Server(FX["model"], "--max-connections", "2")
        try:
            a = http.client.HTTPConnection(s.host, s.port, timeout=BOUND)
            b = http.client.HTTPConnection(s.host, s.port, timeout=BOUND)
            self.assertEqual(s.request("GET", "/health", conn=a)[0], 200)
            self.assertEqual(s.request("GET", "/health", conn=b)[0], 200)
            got = []

            def third():
                try:
                    got.append(s.request("GET", "/health")[0])
                except (ConnectionResetError, http.client.RemoteDisconnected):
                    got.append("closed")
            t = threading.Thread(target=third)
            t.start()
            # a third connection is closed by libmicrohttpd or waits in the backlog: the server
            # never holds more than two
            st, _, data = s.request("GET", "/metrics", conn=a)
            self.assertIn("clipeval_connections 2\n", data.decode())
            b.close()  # a slot frees up (a waiting third request is served then)
            t.join(BOUND)
            self.assertIn(got, ([200], ["closed"]))
            end = time.monotonic() + BOUND  # until the server has let b go
            while time.monotonic() < end:
                data = s.request("GET", "/metrics", conn=a)[2].decode()
                if "clipeval_connections 1\n" in data:
                    break
                time.sleep(0.01)
            self.assertEqual(s.request("GET", "/health")[0], 200)
            a.close()
            self.assertEqual(s.stop(), 0, s.log())
        finally:
            s.cleanup()

    def test_disconnect_mid_body(self):
        s = FX["server"]
        for _ in range(3):
            sk = socket.create_connection((s.host, s.port), timeout=BOUND)
            sk.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                       b"\r\n{\"input\": [\"abc")
            sk.close()
        # the aborted requests are gone (only this /metrics request is in flight)
        s.wait_metric("clipeval_requests_in_flight", 1)
        self.assertEqual(s.post("/v1/embeddings", {"input": "after"})[0], 200)

    def test_slow_clients_time_out(self):
        s = Server(FX["model"], "--request-timeout", "1", "--idle-timeout", "300")
        try:
            for head_done in (False, True):
                sk = socket.create_connection((s.host, s.port), timeout=BOUND)
                msg = (b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
                       if head_done else b"")
                sk.sendall(msg)
                trickle = (b"x" * 100000 if head_done else
                           b"POST /v1/embeddings HTTP/1.1\r\n" + b"X-Slow: y\r\n" * 5000)
                closed = False
                for i in range(int(BOUND / 0.05)):
                    try:
                        sk.sendall(trickle[i:i + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        closed = True
                        break
                    if i == 3:  # others are served meanwhile
                        self.assertEqual(s.request("GET", "/health")[0], 200)
                    time.sleep(0.05)  # the trickle itself, not a synchronisation
                sk.close()
                self.assertTrue(closed, "a trickling client was never cut off")
            self.assertGreaterEqual(s.metric("clipeval_request_timeouts_total"), 2)
            self.assertEqual(s.request("GET", "/health")[0], 200)
            self.assertEqual(s.stop(), 0, s.log())
        finally:
            s.cleanup()


if __name__ == "__main__":
    argv = [a for a in sys.argv if a != "--quick"]
    unittest.main(argv=argv, verbosity=2)
