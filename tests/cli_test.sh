#!/usr/bin/env bash
# The ds command as a user runs it: make a model with the fixtures' DeepSeek tokenizer, inspect
# it, generate, and chat through a pipe (the second turn must not prefill the first again).
# usage: cli_test.sh DS_BINARY TOKENIZER_DIR WORK_DIR
set -euo pipefail
ds=$1 tokenizer=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "cli_test: $*" >&2; exit 1; }

"$ds" --help | grep -q "make-model" || fail "--help does not list the commands"
"$ds" make-model --arch deepseek_v3 --tokenizer "$tokenizer" "$work/model" 2>/dev/null
"$ds" info -m "$work/model" -q > "$work/info.txt"
grep -q "deepseek_v3" "$work/info.txt" && grep -q "+1 MTP" "$work/info.txt" || fail "info: $(cat "$work/info.txt")"

"$ds" run -m "$work/model" -p "Why is the sky blue?" -n 12 -t 2 > "$work/run.txt" 2> "$work/run.err"
grep -q "12 generated" "$work/run.err" || fail "run: $(cat "$work/run.err")"
[ -s "$work/run.txt" ] || fail "run printed nothing"

# Same seed, same text; greedy is the default.
"$ds" run -m "$work/model" -p "Why is the sky blue?" -n 12 -t 2 -q > "$work/run2.txt"
cmp -s "$work/run.txt" "$work/run2.txt" || fail "greedy runs differ"

# A tensor's weights depend only on the seed and its name: with its second layer writing nothing
# into the residual stream (--tail-scale 0), a two-layer model says what its first layer alone does.
"$ds" make-model --arch qwen2 --layers 1 --tokenizer "$tokenizer" "$work/one" 2>/dev/null
"$ds" make-model --arch qwen2 --tail-from 1 --tail-scale 0 --tokenizer "$tokenizer" "$work/two" 2>/dev/null
grep -q '"num_hidden_layers": 1' "$work/one/config.json" || fail "--layers 1: $(grep layers "$work/one/config.json")"
"$ds" run -m "$work/one" -p "Why is the sky blue?" -n 12 -t 2 -q > "$work/one.txt"
"$ds" run -m "$work/two" -p "Why is the sky blue?" -n 12 -t 2 -q > "$work/two.txt"
cmp -s "$work/one.txt" "$work/two.txt" || fail "a silent second layer changed the text"
"$ds" make-model --arch qwen2 --layers 3 "$work/bad" 2> "$work/err.txt" && fail "--layers past the preset succeeded"
grep -q "\-\-layers is 1 to 2" "$work/err.txt" || fail "--layers 3: $(cat "$work/err.txt")"

printf 'Hello there\nAnd again\n/exit\n' | "$ds" chat -m "$work/model" -n 6 -t 2 > "$work/chat.txt" 2> "$work/chat.err"
prompts=$(grep -o '^\[[0-9]* prompt tokens' "$work/chat.err" | grep -o '[0-9]*')
first=$(echo "$prompts" | sed -n 1p) second=$(echo "$prompts" | sed -n 2p)
[ -n "$first" ] && [ -n "$second" ] || fail "chat did not answer twice: $(cat "$work/chat.err")"
# Turn two sends only "<｜User｜>And again<｜Assistant｜>": a few tokens, not the whole history.
[ "$second" -lt 8 ] || fail "chat turn two prefilled $second tokens (history re-sent?)"

"$ds" run -m "$work/nonexistent" -p hi 2> "$work/err.txt" && fail "a missing model succeeded"
grep -q "DS_ERR_NOT_FOUND" "$work/err.txt" || fail "missing model: $(cat "$work/err.txt")"
"$ds" run -m "$work/model" 2> "$work/err.txt" && fail "no prompt succeeded"
grep -q "no prompt" "$work/err.txt" || fail "no prompt: $(cat "$work/err.txt")"
echo "cli_test: make-model, info, run, chat and errors behave"
