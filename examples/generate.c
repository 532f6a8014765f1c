/* ds-generate: loads a model folder through the C ABI and decodes greedily from token ids.
 *
 *   ds-generate MODEL_DIR [-n N_TOKENS] [-t THREADS] [ID ...]
 *
 * Token ids in, token ids out: text goes through the tokenizer once that lands (issue 3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds_c.h"

static void show_progress(void* user, uint64_t done, uint64_t total, const char* stage) {
  (void)user;
  if (!isatty(fileno(stderr))) return;
  const int width = 40;
  const int filled = total ? (int)((double)done / (double)total * width) : width;
  fprintf(stderr, "\r%s [", stage);
  for (int i = 0; i < width; ++i) fputc(i < filled ? '#' : ' ', stderr);
  fprintf(stderr, "] %5.1f%%", total ? 100.0 * (double)done / (double)total : 100.0);
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
}

static int fail(const char* what, ds_status s) {
  fprintf(stderr, "ds-generate: %s: %s: %s\n", what, ds_status_name(s), ds_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fprintf(stderr, "usage: %s MODEL_DIR [-n N_TOKENS] [-t THREADS] [PROMPT_TOKEN_ID ...]\n"
                    "Decodes N_TOKENS (default 16) greedily after the prompt (default: the BOS token).\n",
            argv[0]);
    return argc < 2 ? 2 : 0;
  }
  const char* model_dir = argv[1];
  int n_generate = 16;
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.progress = show_progress;
  int32_t prompt[4096];
  size_t n_prompt = 0;
  for (int i = 2; i < argc; ++i) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      n_generate = atoi(argv[++i]);
    } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
      eo.n_threads = atoi(argv[++i]);
    } else if (n_prompt < sizeof(prompt) / sizeof(prompt[0])) {
      prompt[n_prompt++] = (int32_t)atoi(argv[i]);
    }
  }

  ds_engine* engine;
  ds_status s = ds_engine_open(model_dir, &eo, &engine);
  if (s != DS_OK) return fail("open", s);
  ds_model_info info;
  info.struct_size = sizeof(info);
  ds_engine_info(engine, &info);
  fprintf(stderr, "%s: %s, %u layers, hidden %u, vocab %u, %llu parameters on %s\n", model_dir, info.model_type,
          info.n_layers, info.hidden_size, info.n_vocab, (unsigned long long)info.n_parameters, info.backend);
  if (n_prompt == 0) prompt[n_prompt++] = info.bos_token_id >= 0 ? info.bos_token_id : 0;

  ds_session* session;
  if ((s = ds_session_create(engine, NULL, &session)) != DS_OK) return fail("session", s);
  if ((s = ds_session_append(session, prompt, n_prompt)) != DS_OK) return fail("prefill", s);
  printf("prompt:");
  for (size_t i = 0; i < n_prompt; ++i) printf(" %d", prompt[i]);
  printf("\ngenerated:");
  for (int i = 0; i < n_generate; ++i) {
    int32_t token;
    if ((s = ds_session_next_token(session, &token)) != DS_OK) return fail("decode", s);
    printf(" %d", token);
    fflush(stdout);
  }
  printf("\n");
  ds_session_close(session);
  ds_engine_close(engine);
  return 0;
}
