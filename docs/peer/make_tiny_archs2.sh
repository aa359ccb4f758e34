#!/bin/sh
# Remakes testdata/models/tiny-random-archs2 from scratch: the F16 files, the Q8_0 file and
# llama.cpp's reference logits and greedy ids. See docs/peer/README.md for building llama.cpp
# (LLAMA_SRC, LLAMA_BUILD) and llamacpp_logits (LOGITS). Run from the repository root:
#
#   LLAMA_SRC=/work/peer/src LLAMA_BUILD=/work/peer/build LOGITS=/work/peer/tools/llamacpp_logits \
#       sh docs/peer/make_tiny_archs2.sh
#
# The seeds are the first from 31000 / 32000 / 33000 for which every greedy choice beats the
# runner-up logit by at least 0.01 (llamacpp_logits with LLAMACPP_LOGITS_MARGINS=1 prints that).
set -eu
: "${LLAMA_SRC:?}" "${LLAMA_BUILD:?}" "${LOGITS:?}"
PY=${PY:-/usr/bin/python3}
OUT=testdata/models/tiny-random-archs2
mkdir -p "$OUT"
gen() { PYTHONPATH="$LLAMA_SRC/gguf-py" "$PY" docs/peer/make_tiny_archs2.py "$@"; }
ref() { "$LOGITS" "$OUT/$1.gguf" "$OUT/$1.logits.txt" "$OUT/$1.greedy.txt"; }

gen llama3 31000 "$OUT/tiny-llama3-f16.gguf"
gen gemma3-softcap 32000 "$OUT/tiny-gemma3-softcap-f16.gguf"
gen qwen2-tied 33000 "$OUT/tiny-qwen2-tied-f16.gguf"
"$LLAMA_BUILD/bin/llama-quantize" "$OUT/tiny-llama3-f16.gguf" "$OUT/tiny-llama3-q8_0.gguf" Q8_0
for n in tiny-llama3-f16 tiny-llama3-q8_0 tiny-gemma3-softcap-f16 tiny-qwen2-tied-f16; do
    ref "$n"
done
