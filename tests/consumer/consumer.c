/* A program outside the tree that uses an installed ds: loads a model, prints generated tokens. */
#include <stdio.h>

#include <ds_c.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  ds_engine* engine;
  if (ds_engine_open(argv[1], NULL, &engine) != DS_OK) {
    fprintf(stderr, "open: %s\n", ds_last_error());
    return 1;
  }
  ds_session* session;
  const int32_t prompt[] = {0, 5, 7};
  if (ds_session_create(engine, NULL, &session) != DS_OK || ds_session_append(session, prompt, 3) != DS_OK) {
    fprintf(stderr, "session: %s\n", ds_last_error());
    return 1;
  }
  printf("ds %u generated:", ds_version());
  for (int i = 0; i < 8; ++i) {
    int32_t token;
    if (ds_session_next_token(session, &token) != DS_OK) return 1;
    printf(" %d", token);
  }
  printf("\n");
  ds_session_close(session);
  ds_engine_close(engine);
  return 0;
}
