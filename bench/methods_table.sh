#!/usr/bin/env bash
# Quantization methods side by side on one model, the setup of the calibrated-quantization issue:
# WikiText-2 test (wiki.test.raw), ctx 512, all tokens scored; calibrated methods use 128 windows of
# 512 tokens (BOS + 511 where the tokenizer adds one) drawn with seed 0 from wiki.valid.tokens.
# Usage: MODEL=gpt2-7m-wiki bench/methods_table.sh [configs...]
#   (default configs: int4@128 int3@64 int2@64 int4@row int3@row)
# METHODS: space-separated label=quantize-arguments (commas for spaces), default below.
set -euo pipefail
cd "$(dirname "$0")/.."
# A copy of the binary: a rebuild during the (hour-long) run must not change the method mid-table.
bin=$(mktemp /tmp/lowbit-bench-XXXXXX)
cp "${LOWBIT_BUILD_DIR:-build}/lowbit" "$bin"
chmod +x "$bin"  # mktemp made it 0600
trap 'rm -f "$bin"' EXIT
shared=${LOWBIT_SHARED:-../shared}
model=${MODEL:-gpt2-7m-wiki}
text=$shared/datasets/wikitext-2/wiki.test.raw
out=${OUT_DIR:-out/methods-$model}
methods=${METHODS:-"rtn=--method,rtn imatrix=--method,imatrix awq=--method,awq gptq+clip=--method,gptq,--clip-search,20 awq+gptq+clip=--method,awq,--awq-rounding,gptq,--clip-search,20"}
mkdir -p "$out"
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(int4@128 int3@64 int2@64 int4@row int3@row)
[ -s "$out/float.eval.json" ] || "$bin" eval "$model" --ppl "$text" --ctx 512 --json > "$out/float.eval.json" 2>/dev/null
for c in "${configs[@]}"; do
  for m in $methods; do
    label=${m%%=*}
    IFS=, read -r -a args <<< "${m#*=}"
    "$bin" quantize "$model" -o "$out/$c-$label" --scheme "$c" "${args[@]}" --force --json \
      > "$out/$c-$label.quant.json" 2>/dev/null
    "$bin" eval "$out/$c-$label" --ppl "$text" --ctx 512 --json > "$out/$c-$label.eval.json" 2>/dev/null
    rm -rf "${out:?}/$c-$label"
  done
done
python3 - "$out" "$methods" "${configs[@]}" <<'PY'
import json, sys
out, methods, configs = sys.argv[1], [m.split("=")[0] for m in sys.argv[2].split()], sys.argv[3:]
f = json.load(open(f"{out}/float.eval.json"))
print(f"float ppl {f['ppl']:.2f}\n")
print("| config | " + " | ".join(methods) + " |")
print("|---|" + "---|" * len(methods))
for c in configs:
    cells = []
    for m in methods:
        e = json.load(open(f"{out}/{c}-{m}.eval.json")); q = json.load(open(f"{out}/{c}-{m}.quant.json"))
        cells.append(f"{e['ppl']:.2f} ({q['seconds']:.0f} s)")
    print(f"| {c} | " + " | ".join(cells) + " |")
PY
