#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer) into
# build-asan/ and runs each one for a bounded time on a corpus seeded from ../shared.
#   scripts/fuzz.sh                 every target, 600 s each
#   scripts/fuzz.sh 60 fuzz_gguf    one target, 60 s
#   scripts/fuzz.sh --smoke         every target for a few seconds (CI), then the saved regressions
# Findings (crash-*, leak-*, timeout-*, oom-*) are written to build-asan/fuzz-findings/<target>/;
# a fixed one belongs in fuzz/regressions/<target>/, which every run replays first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=600
if [ "${1:-}" = --smoke ]; then seconds=6; shift; elif [ $# -gt 0 ]; then seconds=$1; shift; fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_safetensors fuzz_safetensors_index fuzz_quant_checkpoint fuzz_config
                                     fuzz_tokenizer_json fuzz_sentencepiece fuzz_vocab_files fuzz_gguf)

export LOWBIT_SANITIZE=1 LOWBIT_BUILD_DIR=${LOWBIT_BUILD_DIR:-build-asan}
bash scripts/build.sh
bin=$root/$LOWBIT_BUILD_DIR
shared=$(cd "$root/../shared" && pwd)
corpus=$bin/fuzz-corpus
findings=$bin/fuzz-findings
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Seeds: real files from ../shared, quantized checkpoints lowbit writes, and small hand-sized inputs.
seed() {  # seed TARGET NAME < bytes
  mkdir -p "$corpus/$1"
  cat > "$corpus/$1/$2"
}
if [ ! -f "$corpus/.seeded" ]; then
  m=$shared/models
  for f in "$m"/*/config.json "$m"/stories260K/hf/config.json "$root"/tests/data/*/config.json; do
    [ -f "$f" ] && seed fuzz_config "$(echo "$f" | md5sum | cut -c1-12).json" < "$f"
  done
  for f in "$m"/*/tokenizer.json; do seed fuzz_tokenizer_json "$(basename "$(dirname "$f")").json" < "$f"; done
  seed fuzz_tokenizer_json tiny-bpe.json <<'J'
{"added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true}],
 "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
 "pre_tokenizer":null,"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"}]},
 "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"fuse_unk":true,
  "vocab":{"<unk>":0,"<s>":1,"<0x41>":2,"▁":3,"a":4,"b":5,"ab":6,"▁ab":7},"merges":["a b","▁ ab"]}}
J
  seed fuzz_tokenizer_json tiny-wordpiece.json <<'J'
{"added_tokens":[{"id":0,"content":"[PAD]","special":true},{"id":1,"content":"[UNK]","special":true},{"id":2,"content":"[CLS]","special":true},{"id":3,"content":"[SEP]","special":true}],
 "normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},
 "pre_tokenizer":{"type":"BertPreTokenizer"},
 "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}}],
  "special_tokens":{"[CLS]":{"id":"[CLS]","ids":[2],"tokens":["[CLS]"]},"[SEP]":{"id":"[SEP]","ids":[3],"tokens":["[SEP]"]}}},
 "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,
  "vocab":{"[PAD]":0,"[UNK]":1,"[CLS]":2,"[SEP]":3,"hello":4,"world":5,"un":6,"##aff":7,"##able":8,",":9}}}
J
  for f in "$m"/*/tokenizer.model "$m"/stories260K/hf/tokenizer.model "$shared"/tokenizer-tests/*/tokenizer.model; do
    [ -f "$f" ] && seed fuzz_sentencepiece "$(echo "$f" | md5sum | cut -c1-12).model" < "$f"
  done
  { printf '\0'; cat "$m/gpt2-7m-wiki/vocab.json"; printf '\0'; cat "$m/gpt2-7m-wiki/merges.txt"; printf '\0'
    cat "$m/gpt2-7m-wiki/tokenizer_config.json"; } | seed fuzz_vocab_files gpt2
  { printf '\1'; cat "$m/distilbert-5m-imdb/vocab.txt"; printf '\0\0'; cat "$m/distilbert-5m-imdb/tokenizer_config.json"; } |
    seed fuzz_vocab_files distilbert
  printf '\0{"a":0,"b":1,"ab":2,"\\u0120":3}\0#version: 0.2\na b\n\0{"bos_token":"a"}' | seed fuzz_vocab_files tiny-gpt2
  printf '\1[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n##s\n\0\0{"do_lower_case":true}' | seed fuzz_vocab_files tiny-wordpiece
  for f in "$m"/stories260K/*.gguf "$shared"/tokenizer-tests/*.gguf; do seed fuzz_gguf "$(basename "$f")" < "$f"; done
  # Quantized checkpoints of the smallest model, one per format family; their safetensors seed both
  # the plain safetensors target and the quantized-metadata target.
  q=$bin/fuzz-seed-checkpoints
  rm -rf "$q"
  for s in int8 int8-dyn int4@32 int4-sym nf4 fp4 kmeans4 int3 binary ternary f16 bf16; do
    "$bin/lowbit" quantize "$m/stories260K/hf" -o "$q/$s" --scheme "$s" >/dev/null 2>&1
    seed fuzz_quant_checkpoint "$s.safetensors" < "$q/$s/model.safetensors"
    seed fuzz_safetensors "$s.safetensors" < "$q/$s/model.safetensors"
  done
  # The calibrated activation schemes (a few windows of the default calibration text): w8a8's
  # act_scale metadata, llm-int8's outlier parts (a low threshold, so that this tiny model has some).
  "$bin/lowbit" quantize "$m/stories260K/hf" -o "$q/w8a8" --scheme w8a8 --calib-samples 4 --calib-ctx 64 >/dev/null 2>&1
  "$bin/lowbit" quantize "$m/stories260K/hf" -o "$q/llm-int8" --scheme llm-int8 --calib-samples 4 --calib-ctx 64 \
    --outlier-threshold 1 >/dev/null 2>&1
  for s in w8a8 llm-int8; do
    seed fuzz_quant_checkpoint "$s.safetensors" < "$q/$s/model.safetensors"
    seed fuzz_safetensors "$s.safetensors" < "$q/$s/model.safetensors"
  done
  seed fuzz_safetensors stories260K.safetensors < "$m/stories260K/hf/model.safetensors"
  seed fuzz_safetensors_index index.json <<'J'
{"metadata":{"total_size":40},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors",
 "model.norm.weight":"model-00001-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}}
J
  touch "$corpus/.seeded"
fi

status=0
for t in "${targets[@]}"; do
  mkdir -p "$findings/$t" "$corpus/$t"
  regress=$root/fuzz/regressions/$t
  if [ -d "$regress" ] && [ -n "$(ls -A "$regress")" ]; then
    echo "fuzz: $t: replaying $(ls "$regress" | wc -l) saved regressions"
    "$bin/$t" -runs=0 "$regress"/* >"$findings/$t/regressions.log" 2>&1 || { cat "$findings/$t/regressions.log"; status=1; }
  fi
  echo "fuzz: $t: ${seconds} s"
  if ! "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
       -artifact_prefix="$findings/$t/" -print_final_stats=1 "$corpus/$t" >"$findings/$t/run.log" 2>&1; then
    tail -n 60 "$findings/$t/run.log"
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$findings/$t/run.log" | tr '\n' ' ' | sed "s/^/fuzz: $t: /"
  echo
done
exit $status
