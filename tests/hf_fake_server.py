#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub's file endpoint, for tests of weights_tools/hf_download.sh.

Serves FOLDER as model MODEL_ID on 127.0.0.1 in the Hub's URL layout:
    HEAD/GET /{MODEL_ID}/resolve/{revision}/{file}
with the headers huggingface_hub reads (X-Repo-Commit; ETag, and X-Linked-Etag = sha256 for
"LFS" files, here every file above 1 KiB), byte ranges (Range: bytes=N-), 404 for absent files.
Options (environment):
    FAKE_HUB_TOKEN      require "Authorization: Bearer <token>" (else 401)
    FAKE_HUB_CUT_FILE   the first GET of this file is cut after half of its bytes (to test resume)
Prints the port on stdout, then serves until killed. Standard library only."""
import hashlib
import http.server
import os
import sys

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def main():
    model_id, folder = sys.argv[1], sys.argv[2]
    token = os.environ.get("FAKE_HUB_TOKEN")
    cut_file = os.environ.get("FAKE_HUB_CUT_FILE")
    state = {"cut_done": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _target(self):
            prefix = "/" + model_id + "/resolve/"
            if not self.path.startswith(prefix):
                return None, None
            rest = self.path[len(prefix):]
            rev, _, name = rest.partition("/")
            if rev not in ("main", COMMIT) or "/" in name or name in ("", ".", ".."):
                return None, None
            path = os.path.join(folder, name)
            return (name, path) if os.path.isfile(path) else (name, None)

        def _headers(self, name, data, status, extra=()):
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            if len(data) > 1024:
                self.send_header("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest())
                self.send_header("ETag", '"lfs-%d"' % len(data))
            else:
                self.send_header("ETag", '"%s"' % hashlib.sha1(data).hexdigest())
            for k, v in extra:
                self.send_header(k, v)

        def _empty(self, status):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _file(self):
            """(name, bytes) of the requested file, or (None, None) once a 401/404 was sent."""
            if token and self.headers.get("Authorization") != "Bearer " + token:
                self._empty(401)
                return None, None
            name, path = self._target()
            if not path:
                self._empty(404)
                return None, None
            with open(path, "rb") as f:
                return name, f.read()

        def do_HEAD(self):
            name, data = self._file()
            if data is None:
                return
            self._headers(name, data, 200, [("Content-Length", str(len(data)))])
            self.end_headers()

        def do_GET(self):
            name, data = self._file()
            if data is None:
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
            if start >= len(data) and len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            extra = [("Content-Length", str(len(body)))]
            if start:
                extra.append(("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))))
            self._headers(name, data, 206 if start else 200, extra)
            self.end_headers()
            if name == cut_file and not state["cut_done"]:
                state["cut_done"] = True
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
