#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then on the default model
# (llama-16m-wiki from ../shared/models): inspect it, generate from a prompt, report its WikiText-2
# perplexity, quantize it to int4 (size table), and compare schemes (size / quality table + plots).
# Usage: scripts/demo.sh [MODEL] ; results in out/ (report windows: $LOWBIT_REPORT_WINDOWS, default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model=${1:-llama-16m-wiki}
bin=${LOWBIT_BUILD_DIR:-build}/lowbit
shared=${LOWBIT_SHARED:-../shared}
text=$shared/datasets/wikitext-2/wiki.test.raw
mkdir -p out
echo "== lowbit inspect $model"
"$bin" inspect "$model" | sed -n '1,4p;/tensors,/p'
echo; echo "== lowbit run $model -p 'Once upon a time' -n 48"
"$bin" run "$model" -p "Once upon a time" -n 48
echo; echo "== lowbit eval $model --ppl $text (ctx 512, all tokens)"
"$bin" eval "$model" --ppl "$text" --ctx 512
echo; echo "== lowbit quantize $model -o out/$model-int4 --scheme int4"
"$bin" quantize "$model" -o "out/$model-int4" --scheme int4 --force
echo; echo "== lowbit report $model -o out/report (first ${LOWBIT_REPORT_WINDOWS:-100} windows of 512 tokens)"
"$bin" report "$model" -o out/report --schemes int8,int4,nf4,int3,int2,binary --ppl "$text" \
  --max-windows "${LOWBIT_REPORT_WINDOWS:-100}"
