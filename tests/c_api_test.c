/* The C ABI from plain C: load a fixture, decode greedily, and compare with the tokens
 * transformers produced (read from reference.safetensors by the small reader below).
 * Usage: c_api_test FIXTURE_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_c.h"

static int failures = 0;
#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                             \
      fputc('\n', stderr);                                      \
      ++failures;                                               \
    }                                                           \
  } while (0)

/* Reads the I64 tensor `name` of a safetensors file into a new int32 array. */
static int32_t* read_i64_tensor(const char* path, const char* name, size_t* n) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* bytes = malloc((size_t)size + 1);
  if (!bytes || fread(bytes, 1, (size_t)size, f) != (size_t)size) { fclose(f); free(bytes); return NULL; }
  fclose(f);
  bytes[size] = 0;
  unsigned long long header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  char key[128];
  snprintf(key, sizeof key, "\"%s\"", name);
  char* header = (char*)bytes + 8;
  char saved = header[header_len];
  header[header_len] = 0;
  char* entry = strstr(header, key);
  char* offsets = entry ? strstr(entry, "\"data_offsets\":[") : NULL;
  unsigned long long begin = 0, end = 0;
  int32_t* out = NULL;
  if (offsets && sscanf(offsets, "\"data_offsets\":[%llu,%llu]", &begin, &end) == 2) {
    header[header_len] = saved;
    *n = (size_t)((end - begin) / 8);
    out = malloc(*n * sizeof(int32_t));
    for (size_t i = 0; i < *n; ++i) {
      long long v;
      memcpy(&v, bytes + 8 + header_len + begin + 8 * i, 8);
      out[i] = (int32_t)v;
    }
  }
  free(bytes);
  return out;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  char ref_path[4096];
  snprintf(ref_path, sizeof ref_path, "%s/reference.safetensors", argv[1]);
  size_t n_prompt = 0, n_expected = 0;
  int32_t* prompt = read_i64_tensor(ref_path, "input_ids", &n_prompt);
  int32_t* expected = read_i64_tensor(ref_path, "greedy_tokens", &n_expected);
  if (!prompt || !expected) {
    fprintf(stderr, "cannot read %s\n", ref_path);
    return 1;
  }

  CHECK(ds_version() == DS_API_VERSION, "ds_version() = %u", ds_version());

  ds_engine_options eo;
  ds_engine_options_init(&eo);
  CHECK(eo.struct_size == sizeof eo, "struct_size %u", eo.struct_size);
  eo.n_threads = 2;
  ds_engine* engine = NULL;
  ds_status s = ds_engine_open(argv[1], &eo, &engine);
  CHECK(s == DS_OK, "open: %s", ds_last_error());
  if (s != DS_OK) return 1;

  ds_model_info info;
  info.struct_size = sizeof info;
  CHECK(ds_engine_info(engine, &info) == DS_OK, "%s", ds_last_error());
  CHECK(strcmp(info.model_type, "deepseek_v3") == 0, "model_type %s", info.model_type);
  CHECK(strcmp(info.backend, "cpu") == 0, "backend %s", info.backend);

  ds_session_options so;
  ds_session_options_init(&so);
  ds_session* session = NULL;
  CHECK(ds_session_create(engine, &so, &session) == DS_OK, "%s", ds_last_error());
  /* The engine handle may go before its sessions: the session keeps the model alive. */
  ds_engine_close(engine);

  CHECK(ds_session_append(session, prompt, n_prompt) == DS_OK, "append: %s", ds_last_error());
  for (size_t i = 0; i < n_expected; ++i) {
    int32_t token = -1;
    CHECK(ds_session_next_token(session, &token) == DS_OK, "next_token: %s", ds_last_error());
    CHECK(token == expected[i], "greedy step %zu: got %d, transformers %d", i, token, expected[i]);
  }
  CHECK(ds_session_n_tokens(session) == n_prompt + n_expected, "n_tokens %zu", ds_session_n_tokens(session));

  /* Errors are statuses with messages. */
  CHECK(ds_session_truncate(session, 100000) == DS_ERR_INVALID_ARGUMENT, "truncate past the end");
  CHECK(strlen(ds_last_error()) > 0, "empty message");
  ds_session_close(session);

  free(prompt);
  free(expected);
  if (failures == 0) printf("c_api_test: %zu greedy tokens match transformers\n", n_expected);
  return failures == 0 ? 0 : 1;
}
