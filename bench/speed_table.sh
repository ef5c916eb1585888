#!/usr/bin/env bash
# The speed table of bench/README.md: for each model shape, a random-weight bf16 checkpoint
# (lowbit synth), its int8 / int8-dyn / int4 / nf4 versions (lm_head, or the tied embeddings, at
# int8 like llama.cpp's Q8_0/Q4_0 keep their output layer at 8/6 bits), and `lowbit bench` on each.
# Usage: bench/speed_table.sh [WORKDIR=/tmp/lowbit-speed] [SHAPES="tinyllama-1.1b llama-3.2-1b"]
# Env: PROMPT (512), GEN (128), REPEATS (3). Prints markdown rows; JSON per run in WORKDIR.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${LOWBIT_BIN:-$here/build/lowbit}
work=${1:-/tmp/lowbit-speed}
shapes=${2:-tinyllama-1.1b llama-3.2-1b}
prompt=${PROMPT:-512} gen=${GEN:-128} repeats=${REPEATS:-3}
mkdir -p "$work"
bw=$("$bin" bench --memory --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bandwidth_gb_s"])')
echo "read bandwidth: $bw GB/s"
echo "| shape | scheme | file GB | prefill tok/s | decode tok/s | weight GB/s | % of bandwidth | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
for shape in $shapes; do
  base="$work/$shape"
  [ -d "$base" ] || "$bin" synth --shape "$shape" -o "$base" >/dev/null
  head='lm_head.weight=int8'
  [ "$shape" = llama-3.2-1b ] && head='*embed_tokens.weight=int8'  # tied: the embeddings are the head
  for scheme in bf16 int8 int8-dyn int4 nf4; do
    model="$base"
    if [ "$scheme" != bf16 ]; then
      model="$base-$scheme"
      [ -d "$model" ] || "$bin" quantize "$base" -o "$model" --scheme "$scheme" --override "$head" >/dev/null 2>&1
    fi
    "$bin" bench "$model" --prompt "$prompt" --gen "$gen" --repeats "$repeats" --bandwidth "$bw" --json \
      2>/dev/null >"$work/bench-$shape-$scheme.json"
    gb=$(du -sb "$model" | cut -f1)
    python3 - "$work/bench-$shape-$scheme.json" "$shape" "$scheme" "$gb" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {int(sys.argv[4]) / 1e9:.2f} | {j['prefill_tok_s']:.1f} "
      f"({j['prefill_tok_s_min']:.1f}-{j['prefill_tok_s_max']:.1f}) | {j['decode_tok_s']:.2f} "
      f"({j['decode_tok_s_min']:.2f}-{j['decode_tok_s_max']:.2f}) | {j['weight_gb_s']:.2f} | "
      f"{j['bandwidth_pct']:.1f} | {j['peak_rss_mb']:.0f} |")
PY
  done
done
