#!/usr/bin/env bash
# The speed table of bench/README.md: for each model shape, a random-weight bf16 checkpoint
# (lowbit synth), its int8 / int8-dyn / int4 / nf4 versions (lm_head, or the tied embeddings, at
# int8 like llama.cpp's Q8_0/Q4_0 keep their output layer at 8/6 bits), and `lowbit bench` on each.
# Usage: bench/speed_table.sh [WORKDIR=/tmp/lowbit-speed] [SHAPES="tinyllama-1.1b llama-3.2-1b"]
# Env: PROMPT (512), GEN (128), REPEATS (3), SCHEMES ("bf16 int8 int8-dyn int4 nf4"), DEPTH (0: decode
# from an empty cache; N: after N tokens of context, `lowbit bench --depth`). Prints markdown rows;
# JSON per run in WORKDIR.
# LLAMA_CPP=DIR (optional): a llama.cpp build's bin folder (llama-quantize, llama-bench; built by hand,
# nothing of it in this repository). Then each shape's bf16 checkpoint is exported to GGUF
# (lowbit export), quantized by llama.cpp to Q8_0 and Q4_0 with Q8_0 output and embeddings, and
# llama-bench (same -p/-n, REPEATS runs, mean ± sd) runs right after lowbit's int8 / int4 rows, so each
# pair shares the same minutes of this machine's drifting bandwidth.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${LOWBIT_BIN:-$here/build/lowbit}
work=${1:-/tmp/lowbit-speed}
shapes=${2:-tinyllama-1.1b llama-3.2-1b}
prompt=${PROMPT:-512} gen=${GEN:-128} repeats=${REPEATS:-3} depth=${DEPTH:-0}
schemes=${SCHEMES:-bf16 int8 int8-dyn int4 nf4}
mkdir -p "$work"
# The bandwidth is measured by `lowbit bench` after each repeat (it moves between minutes); the %
# column is the median of the repeats' decode traffic over their own bandwidth figure.
echo "| shape | scheme | file GB | prefill tok/s | decode tok/s | weight GB/s | read GB/s | % of bandwidth | peak RSS MB | core round trip ns |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for shape in $shapes; do
  base="$work/$shape"
  [ -d "$base" ] || "$bin" synth --shape "$shape" -o "$base" >/dev/null
  head='lm_head.weight=int8'
  [ "$shape" = llama-3.2-1b ] && head='*embed_tokens.weight=int8'  # tied: the embeddings are the head
  for scheme in $schemes; do
    model="$base"
    if [ "$scheme" != bf16 ]; then
      model="$base-$scheme"
      [ -d "$model" ] || "$bin" quantize "$base" -o "$model" --scheme "$scheme" --override "$head" >/dev/null 2>&1
    fi
    "$bin" bench "$model" --prompt "$prompt" --gen "$gen" --depth "$depth" --repeats "$repeats" --json \
      2>/dev/null >"$work/bench-$shape-$scheme.json"
    gb=$(du -sb "$model" | cut -f1)
    python3 - "$work/bench-$shape-$scheme.json" "$shape" "$scheme" "$gb" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {int(sys.argv[4]) / 1e9:.2f} | {j['prefill_tok_s']:.1f} "
      f"({j['prefill_tok_s_min']:.1f}-{j['prefill_tok_s_max']:.1f}) | {j['decode_tok_s']:.2f} "
      f"({j['decode_tok_s_min']:.2f}-{j['decode_tok_s_max']:.2f}) | {j['weight_gb_s']:.2f} | "
      f"{j['bandwidth_gb_s']:.1f} ({j['bandwidth_gb_s_min']:.1f}-{j['bandwidth_gb_s_max']:.1f}) | "
      f"{j['bandwidth_pct']:.1f} ({j['bandwidth_pct_min']:.1f}-{j['bandwidth_pct_max']:.1f}) | {j['peak_rss_mb']:.0f} | "
      f"{j['core_round_trip_ns']:.0f} ({j['core_round_trip_ns_min']:.0f}-{j['core_round_trip_ns_max']:.0f}) |")
PY
    if [ -n "${LLAMA_CPP:-}" ] && { [ "$scheme" = int8 ] || [ "$scheme" = int4 ]; }; then
      type=Q8_0
      [ "$scheme" = int4 ] && type=Q4_0
      gguf="$base-${type,,}.gguf"
      [ -f "$base.gguf" ] || "$bin" export "$base" --to gguf -o "$base.gguf" >/dev/null
      [ -f "$gguf" ] || "$LLAMA_CPP/llama-quantize" --output-tensor-type q8_0 --token-embedding-type q8_0 \
        "$base.gguf" "$gguf" "$type" >/dev/null 2>&1
      "$LLAMA_CPP/llama-bench" -m "$gguf" -p "$prompt" -n "$gen" -t "$(nproc)" -r "$repeats" \
        $([ "$depth" -gt 0 ] && echo "-d $depth") -o json \
        2>/dev/null >"$work/llama-$shape-$type.json"
      python3 - "$work/llama-$shape-$type.json" "$shape" "$type" "$(du -sb "$gguf" | cut -f1)" <<'PY'
import json, sys
runs = {("pp" if r["n_prompt"] else "tg"): r for r in json.load(open(sys.argv[1]))}
pp, tg = runs["pp"], runs["tg"]
print(f"| {sys.argv[2]} | llama.cpp {sys.argv[3]} | {int(sys.argv[4]) / 1e9:.2f} | {pp['avg_ts']:.1f} ± {pp['stddev_ts']:.1f} "
      f"| {tg['avg_ts']:.2f} ± {tg['stddev_ts']:.2f} | | | | | |")
PY
    fi
  done
done
