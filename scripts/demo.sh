#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then inspect the default model,
# generate text from a prompt and report its WikiText-2 perplexity.
# Usage: scripts/demo.sh [MODEL]   (default: llama-16m-wiki from ../shared/models)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model=${1:-llama-16m-wiki}
bin=${LOWBIT_BUILD_DIR:-build}/lowbit
shared=${LOWBIT_SHARED:-../shared}
echo "== lowbit inspect $model"
"$bin" inspect "$model" | sed -n '1,4p;/tensors,/p'
echo "== lowbit run $model -p 'Once upon a time' -n 48"
"$bin" run "$model" -p "Once upon a time" -n 48
echo "== lowbit eval $model --ppl $shared/datasets/wikitext-2/wiki.test.raw --ctx 512"
"$bin" eval "$model" --ppl "$shared/datasets/wikitext-2/wiki.test.raw" --ctx 512
