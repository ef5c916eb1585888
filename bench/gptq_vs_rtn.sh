#!/usr/bin/env bash
# GPTQ vs round-to-nearest on llama-16m-wiki, the setup of the calibrated-quantization issue:
# WikiText-2 test (wiki.test.raw), ctx 512, all tokens scored; GPTQ calibrated on 128 windows of
# BOS + 511 tokens drawn (seed 0) from wiki.valid.tokens; asymmetric (affine), no act-order.
# Usage: bench/gptq_vs_rtn.sh [configs...]   (default: int4@128 int3@64 int2@64 int4@row int3@row)
# GPTQ_ARGS adds options to the GPTQ runs, e.g. GPTQ_ARGS="--clip-search 20"; METHOD=imatrix swaps
# GPTQ for the importance-weighted RTN.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LOWBIT_BUILD_DIR:-build}/lowbit
shared=${LOWBIT_SHARED:-../shared}
text=$shared/datasets/wikitext-2/wiki.test.raw
out=${OUT_DIR:-out/gptq}
mkdir -p "$out"
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(int4@128 int3@64 int2@64 int4@row int3@row)
printf '| config | RTN ppl | GPTQ ppl | GPTQ seconds |\n|---|---|---|---|\n'
for c in "${configs[@]}"; do
  for m in rtn gptq; do
    extra=()
    [ "$m" = gptq ] && read -r -a extra <<< "${GPTQ_ARGS:-}"
    method=$m
    [ "$m" = gptq ] && method=${METHOD:-gptq}
    "$bin" quantize llama-16m-wiki -o "$out/$c-$m" --scheme "$c" --method "$method" "${extra[@]}" --force --json \
      > "$out/$c-$m.quant.json" 2>/dev/null
    "$bin" eval "$out/$c-$m" --ppl "$text" --ctx 512 --json > "$out/$c-$m.eval.json" 2>/dev/null
  done
  python3 - "$out" "$c" <<'PY'
import json, sys
o, c = sys.argv[1], sys.argv[2]
r = json.load(open(f"{o}/{c}-rtn.eval.json")); g = json.load(open(f"{o}/{c}-gptq.eval.json"))
q = json.load(open(f"{o}/{c}-gptq.quant.json"))
print(f"| {c} | {r['ppl']:.2f} | {g['ppl']:.2f} | {q['seconds']:.1f} |")
PY
done
