#!/usr/bin/env bash
# make bench-peers: clipeval fp32, clipeval bf16 and ONNX Runtime fp32 side by side, one table.
#
# The ONNX side is ../shared/bench/cpu/ (used in place, never copied): onnx_clip.py builds ONNX
# graphs of the same synthetic ViT-B/32 weights, make_inputs.py writes the flat inputs both sides
# read, ort_run.js times onnxruntime-node. build/bench_peers (tests/bench/peers.c) times clipeval
# with the same cells and the same rule (warm-up, then ~TARGET_S s of calls, items / median call).
#
# Once, cached in build/peers/: python3-onnx (apt), onnxruntime-node (npm, into build/peers/node),
# the inputs and the ONNX graphs. Every run: accuracy against the HF fp64 goldens, then ROUNDS
# interleaved rounds (per cell: ORT, clipeval fp32, clipeval bf16), medians over rounds. Before
# each timed step the whole machine must be under QUIET_PCT% busy (other processes, not one);
# the script waits for that a bounded time, and a step that never got quiet, or whose run saw
# more than 3% foreign CPU, is labelled noisy in the table.
#
# env: CLIPEVAL_SHARED (required), CLIPEVAL_BUILD (default ./build), TARGET_S (default 3),
#      PEERS_ROUNDS (3), PEERS_CELLS (all six), PEERS_QUIET_PCT (10), PEERS_QUIET_WAIT_S (20: the
#      most one step waits), PEERS_QUIET_BUDGET_S (180: the most the whole run waits),
#      PEERS_FP32_KERNEL (auto; openblas puts OpenBLAS sgemm in the fp32 column).
# OPENBLAS_CORETYPE is reported, never set or changed here.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
SHARED=${CLIPEVAL_SHARED:?set CLIPEVAL_SHARED to the shared data folder (make bench-peers does)}
BUILD=${CLIPEVAL_BUILD:-$SRC/build}
CPU_DIR=$SHARED/bench/cpu
MODEL=$BUILD/models/vitb32-synth
BIN=$BUILD/bench_peers
W=$BUILD/peers
RUN=$W/run
PY=/usr/bin/python3
ORT_VERSION=1.30.0
export TARGET_S=${TARGET_S:-3}
ROUNDS=${PEERS_ROUNDS:-3}
read -r -a CELLS <<<"$(echo "${PEERS_CELLS:-img_b1,img_b8,img_b32,txt15_b32,txtfull77_b32,txt77pad_b32}" | tr , ' ')"
for c in "${CELLS[@]}"; do
  [[ $c =~ ^(img|txt15|txt77pad|txtfull77)_b[1-9][0-9]*$ ]] ||
    { echo "bench-peers: unknown cell '$c' (img_bN, txt15_bN, txt77pad_bN, txtfull77_bN)" >&2; exit 2; }
done
QUIET_PCT=${PEERS_QUIET_PCT:-10}
QUIET_WAIT_S=${PEERS_QUIET_WAIT_S:-20}
QUIET_BUDGET_S=${PEERS_QUIET_BUDGET_S:-180}
FP32_KERNEL=${PEERS_FP32_KERNEL:-auto}

say() { echo "bench-peers: $*" >&2; }
die() { say "$*"; exit 1; }

for f in onnx_clip.py make_inputs.py ort_run.js; do
  [ -f "$CPU_DIR/$f" ] || die "$CPU_DIR/$f is missing (the shared benchmark scripts)"
done
[ -x "$BIN" ] || die "$BIN is missing (make bench-peers builds it)"
[ -f "$MODEL/model.safetensors" ] || die "$MODEL is missing (make bench-peers makes it)"

# ---------------------------------------------------------------- what it needs, once
need=()
for p in python3-onnx python3-numpy; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

ORT_PKG=$W/node/node_modules/onnxruntime-node/package.json
if [ ! -f "$ORT_PKG" ] || [ "$(node -p "require('$ORT_PKG').version")" != "$ORT_VERSION" ]; then
  say "downloading onnxruntime-node@$ORT_VERSION from the npm registry into $W/node"
  mkdir -p "$W/node"
  # --ignore-scripts: the CPU binary ships in the package; its install script only fetches CUDA.
  npm install --prefix "$W/node" --ignore-scripts --no-audit --no-fund --loglevel=error \
    "onnxruntime-node@$ORT_VERSION" >&2
fi

# Inputs and graphs are rebuilt when missing or older than what they are made from.
if [ ! -f "$W/inputs/meta.json" ] || [ "$CPU_DIR/make_inputs.py" -nt "$W/inputs/meta.json" ]; then
  say "writing the inputs into $W/inputs"
  rm -rf "$W/inputs.tmp"
  "$PY" "$CPU_DIR/make_inputs.py" "$SHARED" "$W/inputs.tmp" >/dev/null
  rm -rf "$W/inputs" && mv "$W/inputs.tmp" "$W/inputs"
fi
if [ ! -f "$W/onnx/text.onnx" ] || [ "$MODEL/model.safetensors" -nt "$W/onnx/text.onnx" ] ||
   [ "$CPU_DIR/onnx_clip.py" -nt "$W/onnx/text.onnx" ]; then
  say "building the ONNX graphs into $W/onnx"
  rm -rf "$W/onnx.tmp"
  "$PY" "$CPU_DIR/onnx_clip.py" "$MODEL/model.safetensors" "$W/onnx.tmp" >&2
  rm -rf "$W/onnx" && mv "$W/onnx.tmp" "$W/onnx"
fi
export ORTB=$W

# ---------------------------------------------------------------- the engines
rm -rf "$RUN"
mkdir -p "$RUN"
"$BIN" info --model "$MODEL" --kernel "$FP32_KERNEL" --precision fp32 --out "$RUN/info_fp32.json" ||
  die "clipeval cannot load $MODEL at fp32"
ENGINES=(ort fp32)
if "$BIN" info --model "$MODEL" --precision bf16 --out "$RUN/info_bf16.json"; then
  ENGINES+=(bf16)
else
  say "clipeval bf16 is unavailable here: its column stays empty ($RUN/info_bf16.json)"
fi
engine_args() { # clipeval's options for an engine column
  case $1 in
    fp32) echo "--precision fp32 --kernel $FP32_KERNEL" ;;
    bf16) echo "--precision bf16" ;;
  esac
}
P_CPU="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), family $(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -1) model $(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
P_NCPU=$(nproc) P_ORT="onnxruntime-node $(node -p "require('$ORT_PKG').version")" \
P_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)" \
P_ROUNDS=$ROUNDS P_QUIET_PCT=$QUIET_PCT P_ENGINES="${ENGINES[*]}" P_CELLS="${CELLS[*]}" \
P_DATE=$(date -u +%FT%TZ) "$PY" -c '
import json, os, sys
e = os.environ
json.dump({"cpu": e["P_CPU"], "ncpu": int(e["P_NCPU"]), "ort": e["P_ORT"], "commit": e["P_COMMIT"],
           "target_s": e["TARGET_S"], "rounds": int(e["P_ROUNDS"]), "quiet_pct": int(e["P_QUIET_PCT"]),
           "engines": e["P_ENGINES"], "cells": e["P_CELLS"], "date": e["P_DATE"]},
          open(sys.argv[1], "w"), indent=1)' "$RUN/env.json"

# ---------------------------------------------------------------- accuracy (not timed)
say "accuracy against the HF fp64 goldens"
node "$SRC/tests/bench/peers_ort_embed.js" "$RUN"
"$BIN" stats "$RUN/ort_val_img.f32" "$W/inputs/val_img.f64" --out "$RUN/val_ort_img.json"
"$BIN" stats "$RUN/ort_val_txt.f32" "$W/inputs/val_txt.f64" --out "$RUN/val_ort_txt.json"
for e in "${ENGINES[@]}"; do
  [ "$e" = ort ] && continue
  # shellcheck disable=SC2046
  "$BIN" validate --model "$MODEL" --inputs "$W/inputs" $(engine_args "$e") --out "$RUN/val_$e.json"
done

# ---------------------------------------------------------------- quiet machine
cpu_ticks() { # "busy total" jiffies of the whole machine since boot (guest time is in user)
  local _c u n s i w q sq st _rest
  read -r _c u n s i w q sq st _rest </proc/stat
  echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
busy_pct() { # whole-machine busy percent over half a second (50 jiffies per CPU)
  local a b
  read -r -a a <<<"$(cpu_ticks)"
  sleep 0.5
  read -r -a b <<<"$(cpu_ticks)"
  local dt=$((b[1] - a[1]))
  [ "$dt" -gt 0 ] || dt=1
  echo $((100 * (b[0] - a[0]) / dt))
}
QUIET_SPENT=0
wait_quiet() { # sets QSTATE (quiet|noisy), QBUSY, QWAITED; logs the step in steps.tsv
  local label=$1 t0=$SECONDS
  while :; do
    QBUSY=$(busy_pct)
    QWAITED=$((SECONDS - t0))
    if [ "$QBUSY" -lt "$QUIET_PCT" ]; then QSTATE=quiet; break; fi
    if [ "$QWAITED" -ge "$QUIET_WAIT_S" ] || [ $((QUIET_SPENT + QWAITED)) -ge "$QUIET_BUDGET_S" ]; then
      QSTATE=noisy
      break
    fi
    sleep 2
  done
  QUIET_SPENT=$((QUIET_SPENT + QWAITED))
  printf '%s\t%s\t%s\t%s\n' "$label" "$QSTATE" "$QBUSY" "$QWAITED" >>"$RUN/steps.tsv"
}

# ---------------------------------------------------------------- interleaved rounds
printf 'step\tstate\tbusy_pct\twaited_s\n' >"$RUN/steps.tsv"
t_start=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
  d=$RUN/r$r
  mkdir -p "$d"
  say "round $r of $ROUNDS"
  wait_quiet "r$r ceiling"
  "$BIN" ceiling --out "$d/ceiling.json"
  for c in "${CELLS[@]}" first; do
    for e in "${ENGINES[@]}"; do
      wait_quiet "r$r $e $c"
      if [ "$e" = ort ]; then
        if [ "$c" = first ]; then
          node "$CPU_DIR/ort_run.js" first --out "$d/ort_first.json" >/dev/null
          say "ort first: $(node -p "const r=require('$d/ort_first.json'); r.script_start_to_result_s.toFixed(3)+' s to the first embedding, peak RSS '+r.vm_hwm_mb.toFixed(0)+' MiB'")"
        else
          node "$CPU_DIR/ort_run.js" bench --cells "$c" --out "$d/ort_$c.json" >/dev/null
        fi
      else
        # shellcheck disable=SC2046
        if [ "$c" = first ]; then
          "$BIN" first --model "$MODEL" --inputs "$W/inputs" $(engine_args "$e") --out "$d/${e}_first.json"
        else
          "$BIN" bench --model "$MODEL" --inputs "$W/inputs" $(engine_args "$e") --cells "$c" \
            --out "$d/${e}_$c.json"
        fi
      fi
    done
  done
done
say "timed rounds took $((SECONDS - t_start)) s, $QUIET_SPENT s of it waiting for a quiet machine"

"$PY" "$SRC/tests/bench/peers_table.py" "$RUN" | tee "$RUN/table.md"
