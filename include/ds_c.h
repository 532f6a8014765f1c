/*
 * ds_c.h - the stable C ABI of ds, an inference engine for DeepSeek-V3/R1 and the R1 distills
 * (Qwen2 and Llama layouts).
 *
 * This is the only public header. The rules it follows, so that old callers keep working when
 * the library grows:
 *  - Engines and sessions are opaque handles.
 *  - Option structs start with `uint32_t struct_size` and are filled by their `*_init` function;
 *    new fields are only ever appended, and the library reads only the fields the caller's
 *    struct_size covers (the rest keep their defaults).
 *  - Every fallible call returns a ds_status (DS_OK = 0). On failure a message naming the file,
 *    tensor or field and the reason is kept in thread-local storage: ds_last_error().
 *  - No call aborts the process or lets a C++ exception escape, whatever the arguments.
 *  - Strings are UTF-8 with explicit lengths where they come from the caller.
 *
 * Threads: an engine is immutable after ds_engine_open and may be shared by any number of
 * threads and sessions. A session is used by one thread at a time; different sessions run in
 * parallel. ds_engine_close may be called while sessions are open: the engine's memory is freed
 * when its last session closes.
 *
 * A minimal program:
 *
 *   ds_engine_options eo; ds_engine_options_init(&eo);
 *   ds_engine* e;
 *   if (ds_engine_open("path/to/hf-model-dir", &eo, &e) != DS_OK) { puts(ds_last_error()); ... }
 *   ds_session_options so; ds_session_options_init(&so);
 *   ds_session* s; ds_session_create(e, &so, &s);
 *   ds_session_append(s, prompt_ids, n_prompt);          // prefill
 *   for (int i = 0; i < 32; ++i) { int32_t t; ds_session_next_token(s, &t); ... }
 *   ds_session_close(s); ds_engine_close(e);
 */
#ifndef DS_C_H_
#define DS_C_H_

#include <stddef.h>
#include <stdint.h>

#if defined(DS_BUILDING_LIBRARY)
#define DS_API __attribute__((visibility("default")))
#else
#define DS_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version of this header. A binding compares it with ds_version() at load. */
#define DS_API_VERSION 1

typedef enum ds_status {
  DS_OK = 0,
  DS_ERR_INVALID_ARGUMENT = 1, /* a null pointer, a bad option value, a token id out of range */
  DS_ERR_NOT_FOUND = 2,        /* a missing model folder, file or tensor */
  DS_ERR_FORMAT = 3,           /* a malformed config.json or safetensors file, a wrong shape or dtype */
  DS_ERR_UNSUPPORTED = 4,      /* a model_type, dtype or backend this build does not support */
  DS_ERR_OUT_OF_MEMORY = 5,    /* an allocation failed; the message says how much was asked */
  DS_ERR_CONTEXT_FULL = 6,     /* the tokens do not fit the session's context; nothing was appended */
  DS_ERR_BACKEND = 7,          /* the compute backend failed (driver, device, library) */
  DS_ERR_CANCELLED = 8,        /* ds_session_cancel stopped the call */
  DS_ERR_INVALID_STATE = 9,    /* the call does not fit the session's state (e.g. no logits yet) */
  DS_ERR_INTERNAL = 10         /* a bug in ds: please report it with the message */
} ds_status;

typedef enum ds_backend {
  DS_BACKEND_AUTO = 0, /* CUDA when the plugin and a device are present, else CPU */
  DS_BACKEND_CPU = 1,
  DS_BACKEND_CUDA = 2
} ds_backend;

typedef enum ds_compute_dtype {
  DS_COMPUTE_AUTO = 0, /* the backend's choice: float32 on the CPU */
  DS_COMPUTE_F32 = 1,
  DS_COMPUTE_BF16 = 2
} ds_compute_dtype;

typedef struct ds_engine ds_engine;
typedef struct ds_session ds_session;

/* Called while a model loads: bytes of checkpoint tensors converted so far, and in all.
 * `stage` is a short description ("loading weights"). It runs on the thread of ds_engine_open. */
typedef void (*ds_progress_callback)(void* user_data, uint64_t done_bytes, uint64_t total_bytes,
                                     const char* stage);

typedef struct ds_engine_options {
  uint32_t struct_size;            /* sizeof(ds_engine_options), set by ds_engine_options_init */
  ds_backend backend;              /* default DS_BACKEND_CPU */
  int32_t n_threads;               /* CPU threads; 0 (default) = the machine's cores */
  ds_compute_dtype compute_dtype;  /* default DS_COMPUTE_AUTO */
  ds_progress_callback progress;   /* default NULL: no progress reports */
  void* progress_user_data;
} ds_engine_options;

typedef struct ds_session_options {
  uint32_t struct_size;  /* sizeof(ds_session_options), set by ds_session_options_init */
  uint32_t n_ctx;        /* most tokens the session holds; 0 (default) = max_position_embeddings.
                            The KV cache grows on demand up to this, so a large n_ctx costs nothing
                            until it is used. */
  /* Sampling for ds_session_next_token. The default (temperature 0) is greedy. */
  float temperature;     /* <= 0: greedy (argmax) */
  int32_t top_k;         /* 0: off */
  float top_p;           /* 1: off */
  float min_p;           /* 0: off */
  uint64_t seed;         /* the session's RNG seed: same seed, same tokens */
  int32_t logits_all;    /* non-zero: ds_session_all_logits returns every appended position's
                            logits, not only the last one's (costs a vocab-sized row per token) */
} ds_session_options;

/* The DS_API_VERSION the loaded library was built with. */
DS_API uint32_t ds_version(void);

/* The message of the last failed call on this thread ("" if none). Valid until the next call on
 * this thread. */
DS_API const char* ds_last_error(void);

/* A short, static name for a status ("DS_ERR_FORMAT"). */
DS_API const char* ds_status_name(ds_status status);

DS_API void ds_engine_options_init(ds_engine_options* options);

/* Loads a Hugging Face checkpoint folder: config.json and model.safetensors, or the shards that
 * model.safetensors.index.json names. Architectures: deepseek_v3, qwen2, llama. `options` may be
 * NULL for the defaults. On success *out owns the engine; close it with ds_engine_close. */
DS_API ds_status ds_engine_open(const char* model_dir, const ds_engine_options* options,
                                ds_engine** out);

/* Releases the caller's handle. NULL is allowed. */
DS_API void ds_engine_close(ds_engine* engine);

/* Facts about the loaded model. Any out-pointer may be NULL. */
typedef struct ds_model_info {
  uint32_t struct_size;      /* set by the caller to sizeof(ds_model_info) */
  char model_type[32];       /* "deepseek_v3", "qwen2", "llama" (NUL-terminated) */
  uint32_t n_vocab;
  uint32_t n_layers;
  uint32_t hidden_size;
  uint32_t max_position_embeddings;
  uint32_t n_mtp_layers;     /* DeepSeek's next-token-prediction layers loaded (0 if none) */
  int32_t bos_token_id;      /* -1 if the config names none */
  int32_t eos_token_id;      /* -1 if the config names none */
  uint64_t n_parameters;     /* weights loaded, MTP included */
  uint64_t weight_bytes;     /* backend memory the weights take */
  char backend[16];          /* "cpu", "cuda" */
} ds_model_info;

DS_API ds_status ds_engine_info(const ds_engine* engine, ds_model_info* info);

DS_API void ds_session_options_init(ds_session_options* options);

/* A conversation with its own KV cache. `options` may be NULL for the defaults. */
DS_API ds_status ds_session_create(ds_engine* engine, const ds_session_options* options,
                                   ds_session** out);
DS_API void ds_session_close(ds_session* session);

/* Runs the model over `n` more tokens (prefill, or one decode step with n = 1) and keeps the
 * logits of the last one (of all of them with logits_all). If the tokens do not fit n_ctx it
 * returns DS_ERR_CONTEXT_FULL and the session is unchanged. */
DS_API ds_status ds_session_append(ds_session* session, const int32_t* ids, size_t n);

/* The logits after the last appended token: *n_vocab floats, valid until the next call that
 * changes the session. DS_ERR_INVALID_STATE if nothing has been appended. */
DS_API ds_status ds_session_logits(ds_session* session, const float** logits, size_t* n_vocab);

/* With logits_all: the logits of every position of the last ds_session_append, row-major
 * [*n_rows][*n_vocab]. */
DS_API ds_status ds_session_all_logits(ds_session* session, const float** logits, size_t* n_rows,
                                       size_t* n_vocab);

/* Samples a token from the current logits with the session's sampling options, appends it and
 * runs the model one step, so the logits then belong to it. */
DS_API ds_status ds_session_next_token(ds_session* session, int32_t* token);

/* Keeps the first n_tokens tokens and drops the rest from the cache (n_tokens <= the current
 * count). The logits then belong to token n_tokens - 1 (recomputed: one decode step). */
DS_API ds_status ds_session_truncate(ds_session* session, size_t n_tokens);

/* Empties the session (same as truncating to 0). */
DS_API ds_status ds_session_reset(ds_session* session);

/* How many tokens the session holds. */
DS_API size_t ds_session_n_tokens(const ds_session* session);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DS_C_H_ */
