#!/usr/bin/env bash
# The CPU race against llama.cpp (issue 8), on one machine in one run: the same random-weight
# R1-Distill-Qwen-1.5B-shaped model as our safetensors and as GGUF (bench/make_gguf), compared at
# equal bits per weight (bf16 vs F16, int8 vs Q8_0, int4 vs Q4_0): prefill of a PROMPT-token prompt
# and greedy decode of GEN tokens after it. llama.cpp runs its own prebuilt CPU libraries (from the
# npm package @node-llama-cpp/linux-x64), driven by bench/race_llamacpp.c through llama.h.
#
#   bench/race_llamacpp.sh            env: BUILD (build), WORK (/tmp/ds-race), THREADS ("1 2"),
#                                          PROMPT (512), GEN (32), PRESET (r1-distill-qwen-1.5b),
#                                          COMPUTE (auto; bf16: our prompt matmuls with bf16
#                                          products where the CPU has AVX512_BF16, as llama.cpp
#                                          rounds its activations to 8 bits for Q8_0 / Q4_0),
#                                          LLAMACPP ($WORK/llama.cpp: lib/ with the libraries,
#                                          include/ with llama.h and ggml's headers; fetched with
#                                          npm when missing, so a machine without network can be
#                                          handed a copy)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
work=${WORK:-/tmp/ds-race}
threads=${THREADS:-"1 2"}
prompt=${PROMPT:-512}
gen=${GEN:-32}
compute=${COMPUTE:-auto}
mkdir -p "$work"
llamacpp=${LLAMACPP:-$work/llama.cpp}
if [ ! -d "$llamacpp/lib" ]; then
  # llama.cpp's prebuilt libraries, and its headers from the source bundle the same package ships.
  (cd "$work" && npm install --no-audit --no-fund --ignore-scripts node-llama-cpp@3.22.1 \
    @node-llama-cpp/linux-x64@3.22.1 >/dev/null)
  rm -rf "$work/llama-src" && git clone -q "$work/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$work/llama-src"
  mkdir -p "$llamacpp/lib" "$llamacpp/include"
  cp "$work"/node_modules/@node-llama-cpp/linux-x64/bins/*/{libllama.v,libggml}*.so "$llamacpp/lib/"
  cp "$work/llama-src/include/llama.h" "$work"/llama-src/ggml/include/*.h "$llamacpp/include/"
fi
libllama=$(basename "$(ls "$llamacpp"/lib/libllama.v*.so)")
libggml=$(basename "$(ls "$llamacpp"/lib/libggml.v*.so)")
${CC:-cc} -O2 -std=c11 -I"$llamacpp/include" bench/race_llamacpp.c -o "$work/race_llamacpp" -L"$llamacpp/lib" \
  -l:"$libllama" -l:"$libggml" -l:libggml-base.so -Wl,-rpath,"$llamacpp/lib"
[ -f "$work/model/config.json" ] || "$build/ds" make-model --preset "${PRESET:-r1-distill-qwen-1.5b}" "$work/model" >/dev/null
for f in F16 Q8_0 Q4_0; do
  [ -f "$work/model-$f.gguf" ] || "$build/bench/make_gguf" "$work/model" "$work/model-$f.gguf" "$f" >/dev/null
done

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u +%F)"
echo "prompt $prompt tokens, decode $gen tokens after it; ds --compute $compute; tok/s, one run each"
echo "| threads | ds weights | ds prefill | llama.cpp | ratio | ds decode | llama.cpp | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for t in $threads; do
  for pair in "bf16 F16" "int8 Q8_0" "int4 Q4_0"; do
    set -- $pair
    ds_out=$("$build/ds" bench -m "$work/model" -t "$t" -p "$prompt" -g "$gen" -r 1 --weights "$1" --compute "$compute" -q 2>&1)
    ds_prefill=$(echo "$ds_out" | awk '$1 == "prefill" {print $4}')
    ds_decode=$(echo "$ds_out" | awk '$1 == "decode" {print $4}')
    ll_out=$("$work/race_llamacpp" "$llamacpp/lib" "$work/model-$2.gguf" "$t" "$prompt" "$gen")
    ll_prefill=$(echo "$ll_out" | sed 's/.*"prefill_tok_s":\([0-9.]*\).*/\1/')
    ll_decode=$(echo "$ll_out" | sed 's/.*"decode_tok_s":\([0-9.]*\).*/\1/')
    awk -v t="$t" -v w="$1 / $2" -v dp="$ds_prefill" -v lp="$ll_prefill" -v dd="$ds_decode" -v ld="$ll_decode" \
      'BEGIN { printf "| %s | %s | %.1f | %.1f | %.2fx | %.2f | %.2f | %.2fx |\n", t, w, dp, lp, dp / lp, dd, ld, dd / ld }'
  done
done
