// llama.cpp's side of the race (bench/race_llamacpp.sh): loads a GGUF through node-llama-cpp
// (llama.cpp's own prebuilt CPU libraries), feeds a prompt of token ids, and times the prompt
// (prefill) and greedy decoding. Prints one JSON line.
//   node race_llamacpp.mjs MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, threadsArg, promptArg, genArg] = process.argv.slice(2);
const threads = Number(threadsArg), promptTokens = Number(promptArg), genTokens = Number(genArg);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: promptTokens + genTokens + 16, batchSize: 512, threads});
const sequence = context.getSequence();
// ds's bench feeds random ids too; any ids below the vocabulary do (a fixed LCG here; the race's
// models have 151936 tokens).
const prompt = [];
let state = 1;
for (let i = 0; i < promptTokens; ++i) {
  state = (state * 1103515245 + 12345) % 2147483648;
  prompt.push(state % 100000);
}
const t0 = performance.now();
const tokens = sequence.evaluate(prompt, {temperature: 0})[Symbol.asyncIterator]();
const first = await tokens.next();  // the prompt's pass, and the first token from its logits
const t1 = performance.now();
const generated = [first.value];
for (let i = 1; i < genTokens; ++i) generated.push((await tokens.next()).value);
const t2 = performance.now();
await tokens.return?.();
console.log(JSON.stringify({
  engine: "llama.cpp", threads, prompt_tokens: promptTokens,
  prefill_tok_s: promptTokens / ((t1 - t0) / 1000),
  decode_tok_s: (genTokens - 1) / ((t2 - t1) / 1000),
}));
await context.dispose();
await model.dispose();
await llama.dispose();
