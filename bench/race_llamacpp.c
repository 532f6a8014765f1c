// llama.cpp's side of the race (bench/race_llamacpp.sh): loads a GGUF through llama.cpp's own
// prebuilt libraries (libllama and its CPU backends from the npm package @node-llama-cpp/linux-x64),
// feeds a prompt of token ids in one batch, and times the prompt (prefill) and greedy decoding.
// Prints one JSON line. C against llama.h, so that it needs no node on the machine it races on.
//   race_llamacpp LIBDIR MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS
// LIBDIR holds the libggml-cpu-*.so variants; ggml picks the best one for this CPU.
#define _POSIX_C_SOURCE 199309L  // clock_gettime under -std=c11
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ggml-backend.h"
#include "llama.h"

static double Seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void Quiet(enum ggml_log_level level, const char* text, void* user) {
  (void)user;
  if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s LIBDIR MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS\n", argv[0]);
    return 2;
  }
  const char* lib_dir = argv[1];
  const char* model_path = argv[2];
  const int threads = atoi(argv[3]), prompt_tokens = atoi(argv[4]), gen_tokens = atoi(argv[5]);
  if (threads < 1 || prompt_tokens < 1 || prompt_tokens > 512 || gen_tokens < 2) {
    fprintf(stderr, "race_llamacpp: need THREADS >= 1, 1 <= PROMPT_TOKENS <= 512, GEN_TOKENS >= 2\n");
    return 2;
  }
  llama_log_set(Quiet, NULL);
  ggml_backend_load_all_from_path(lib_dir);
  llama_backend_init();

  struct llama_model_params model_params = llama_model_default_params();
  model_params.n_gpu_layers = 0;
  struct llama_model* model = llama_model_load_from_file(model_path, model_params);
  if (!model) {
    fprintf(stderr, "race_llamacpp: cannot load %s\n", model_path);
    return 1;
  }
  // As node-llama-cpp's createContext({contextSize, batchSize: 512, threads}) sets them, which the
  // earlier races used: one 512-token batch, flash attention where llama.cpp picks it.
  struct llama_context_params ctx_params = llama_context_default_params();
  ctx_params.n_ctx = (uint32_t)(prompt_tokens + gen_tokens + 16);
  ctx_params.n_batch = ctx_params.n_ubatch = 512;
  ctx_params.n_threads = ctx_params.n_threads_batch = threads;
  ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
  struct llama_context* ctx = llama_init_from_model(model, ctx_params);
  if (!ctx) {
    fprintf(stderr, "race_llamacpp: cannot create a context for %s\n", model_path);
    return 1;
  }
  struct llama_sampler* greedy = llama_sampler_init_greedy();

  // ds's bench feeds random ids too; any ids below the vocabulary do (the same LCG as before; the
  // race's models have 151936 tokens).
  llama_token* prompt = malloc(sizeof(llama_token) * (size_t)prompt_tokens);
  unsigned long long state = 1;
  for (int i = 0; i < prompt_tokens; ++i) {
    state = (state * 1103515245ULL + 12345ULL) % 2147483648ULL;
    prompt[i] = (llama_token)(state % 100000);
  }

  const double t0 = Seconds();
  if (llama_decode(ctx, llama_batch_get_one(prompt, prompt_tokens)) != 0) {
    fprintf(stderr, "race_llamacpp: the prompt's decode failed\n");
    return 1;
  }
  llama_token token = llama_sampler_sample(greedy, ctx, -1);
  const double t1 = Seconds();
  for (int i = 1; i < gen_tokens; ++i) {
    if (llama_decode(ctx, llama_batch_get_one(&token, 1)) != 0) {
      fprintf(stderr, "race_llamacpp: decode step %d failed\n", i);
      return 1;
    }
    token = llama_sampler_sample(greedy, ctx, -1);
  }
  const double t2 = Seconds();
  printf("{\"engine\":\"llama.cpp\",\"threads\":%d,\"prompt_tokens\":%d,\"prefill_tok_s\":%.2f,\"decode_tok_s\":%.2f}\n",
         threads, prompt_tokens, prompt_tokens / (t1 - t0), (gen_tokens - 1) / (t2 - t1));

  free(prompt);
  llama_sampler_free(greedy);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
