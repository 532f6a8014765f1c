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
 *  - Enum-valued struct fields are int32_t (an enum's size is the compiler's choice); functions
 *    return ds_status, an int-sized enum on every supported platform.
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
  DS_ERR_INTERNAL = 10,        /* a bug in ds: please report it with the message */
  DS_ERR_BUFFER_TOO_SMALL = 11 /* the output did not fit: the size out-parameter says what is needed */
} ds_status;

typedef enum ds_backend {
  DS_BACKEND_AUTO = 0, /* CUDA when the plugin and a device are present, else CPU */
  DS_BACKEND_CPU = 1,
  DS_BACKEND_CUDA = 2  /* the plugin libds-cuda.so, found beside libds or at $DS_CUDA_PLUGIN; device 0 */
} ds_backend;

typedef enum ds_compute_dtype {
  DS_COMPUTE_AUTO = 0, /* the backend's choice: float32 on the CPU, bf16 on CUDA */
  DS_COMPUTE_F32 = 1,
  DS_COMPUTE_BF16 = 2  /* CUDA: matrices in bf16 on the tensor cores (f32 accumulate), the rest f32.
                          CPU: f32 weights stored as bf16, and a prompt's matmuls with bf16 products
                          (f32 accumulate) where the CPU has AVX512_BF16; f32 products elsewhere */
} ds_compute_dtype;

typedef struct ds_engine ds_engine;
typedef struct ds_session ds_session;

/* Called while a model loads: bytes of checkpoint tensors converted so far, and in all.
 * `stage` is a short description ("loading weights"). It runs on the thread of ds_engine_open. */
typedef void (*ds_progress_callback)(void* user_data, uint64_t done_bytes, uint64_t total_bytes,
                                     const char* stage);

typedef struct ds_engine_options {
  uint32_t struct_size;            /* sizeof(ds_engine_options), set by ds_engine_options_init */
  int32_t backend;                 /* a ds_backend; default DS_BACKEND_CPU */
  int32_t n_threads;               /* CPU threads; 0 (default) = the physical cores this process may run on */
  int32_t compute_dtype;           /* a ds_compute_dtype; default DS_COMPUTE_AUTO */
  ds_progress_callback progress;   /* default NULL: no progress reports */
  void* progress_user_data;
  int32_t weight_format;           /* a ds_weight_format; default DS_WEIGHTS_F32 */
  int32_t device;                  /* the CUDA device (ordinal, as nvidia-smi lists them) for
                                      DS_BACKEND_CUDA and AUTO; default 0. Added in 0.1 without a
                                      size change: it sits in what was the struct's tail padding. */
} ds_engine_options;

typedef enum ds_weight_format {
  DS_WEIGHTS_F32 = 0,  /* exact: what the reference computes */
  DS_WEIGHTS_BF16 = 1, /* matrices stored as bf16 (half the bytes per decoded token), f32 compute */
  /* Weight-only quantization, CPU backend only (DS_BACKEND_AUTO then picks the CPU): matrices in
   * blocks of 32 weights with an f16 scale each, llama.cpp's Q8_0 and Q4_0 layouts; a matrix whose
   * rows are not whole blocks stays bf16. Activations are quantized to int8 per block of 32 for the
   * decode dot products, as llama.cpp does. */
  DS_WEIGHTS_INT8 = 2, /* 8.5 bits per weight */
  DS_WEIGHTS_INT4 = 3  /* 4.5 bits per weight */
} ds_weight_format;

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
  /* Speculative decoding: a proposer drafts tokens, the model checks them all in one pass.
   * Greedy output is identical to plain decoding; sampled output has the same distribution.
   * ds_session_next_token and ds_session_generate then decide several tokens per model pass
   * (next_token hands them out one per call). */
  int32_t speculative_method; /* a ds_speculative_method; default DS_SPECULATIVE_NONE */
  int32_t draft_tokens;       /* k, tokens drafted per pass (1..64); default 4 */
  int32_t draft_adaptive;     /* non-zero: k grows while drafts are accepted, shrinks when not */
  ds_engine* draft_engine;    /* DS_SPECULATIVE_DRAFT: a smaller model with the same vocabulary
                                 (it must stay open while the session lives) */
  int32_t ngram_min;          /* DS_SPECULATIVE_NGRAM: the shortest suffix to look up; default 1 */
  int32_t ngram_max;          /* the longest; default 3 */
} ds_session_options;

typedef enum ds_speculative_method {
  DS_SPECULATIVE_NONE = 0,
  DS_SPECULATIVE_DRAFT = 1, /* a draft model (draft_engine) */
  DS_SPECULATIVE_MTP = 2,   /* DeepSeek-V3's next-token-prediction layer */
  DS_SPECULATIVE_NGRAM = 3  /* prompt lookup: what followed an earlier occurrence of the last tokens */
} ds_speculative_method;

typedef struct ds_session_stats {
  uint32_t struct_size;          /* set by the caller to sizeof(ds_session_stats) */
  uint64_t target_passes;        /* speculative steps (model passes over k+1 positions) */
  uint64_t drafted_tokens;
  uint64_t accepted_tokens;
  double mean_accepted_length;   /* tokens decided per target pass (accepted drafts + 1) */
  double draft_seconds;
  double verify_seconds;
} ds_session_stats;

/* Speculative decoding's counters since the session was created (zeros without it). */
DS_API ds_status ds_session_stats_get(const ds_session* session, ds_session_stats* stats);

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
  int32_t has_tokenizer;     /* the folder's tokenizer.json loaded (else ds_tokenize says why not) */
  uint64_t kv_bytes_per_token; /* KV cache memory per token of context, all layers */
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

/* ---- Text ------------------------------------------------------------------------------
 * The tokenizer is the model folder's tokenizer.json (byte-level BPE, as Hugging Face
 * tokenizers runs it). Output buffers follow "pass capacity, get required size": the size
 * out-parameter is always set; if capacity is smaller the call returns DS_ERR_BUFFER_TOO_SMALL
 * and writes nothing, so a first call with capacity 0 asks for the size. */

/* Text (UTF-8; invalid UTF-8 is DS_ERR_INVALID_ARGUMENT naming the byte) to token ids.
 * add_special: prepend BOS where the tokenizer config asks for it. Special-token text in the
 * input (e.g. "<｜User｜>") becomes the special token. */
DS_API ds_status ds_tokenize(const ds_engine* engine, const char* text, size_t len, int add_special,
                             int32_t* ids, size_t capacity, size_t* n_ids);

/* Token ids to text (special tokens included, as Hugging Face's decode). The bytes are not
 * NUL-terminated; *len is their count. */
DS_API ds_status ds_detokenize(const ds_engine* engine, const int32_t* ids, size_t n, char* buf,
                               size_t capacity, size_t* len);

/* One token's bytes. They may end inside a UTF-8 character: streaming code should use
 * ds_session_generate, which only ever emits whole characters. */
DS_API ds_status ds_token_to_piece(const ds_engine* engine, int32_t token, char* buf, size_t capacity,
                                   size_t* len);

typedef struct ds_chat_message {
  const char* role;    /* "system", "user", "assistant", "tool" (NUL-terminated) */
  const char* content; /* UTF-8, NUL-terminated */
} ds_chat_message;

/* Formats a conversation with the model's chat template (DeepSeek-V3 or R1 style, told from
 * tokenizer_config.json). add_generation_prompt ends it with the assistant's turn (R1: with
 * "<think>\n"). The text starts with the BOS token's text: tokenize it with add_special = 0. */
DS_API ds_status ds_chat_apply(const ds_engine* engine, const ds_chat_message* messages, size_t n,
                               int add_generation_prompt, char* buf, size_t capacity, size_t* len);

/* ---- Generation ------------------------------------------------------------------------ */

typedef enum ds_stop_reason {
  DS_STOP_EOS = 0,         /* the model's end-of-sequence token */
  DS_STOP_MAX_TOKENS = 1,
  DS_STOP_STOP_TOKEN = 2,  /* one of params.stop_ids */
  DS_STOP_STOP_STRING = 3, /* one of params.stop_strings (it is not emitted) */
  DS_STOP_CALLBACK = 4,    /* the piece callback returned non-zero */
  DS_STOP_CANCELLED = 5,   /* ds_session_cancel */
  DS_STOP_CONTEXT_FULL = 6 /* n_ctx reached; the tokens so far are kept */
} ds_stop_reason;

/* Flags of a piece. */
#define DS_PIECE_REASONING 1u /* inside <think>…</think> (markers included): R1's reasoning */

/* Called for every generated token, one or more times: `piece` is the text it released (whole
 * UTF-8 characters; possibly empty, e.g. while a stop string might be starting), `token` the
 * id. Return non-zero to stop. Runs on the thread of ds_session_generate. */
typedef int (*ds_piece_callback)(void* user_data, const char* piece, size_t len, int32_t token,
                                 uint32_t flags);

typedef struct ds_generate_params {
  uint32_t struct_size;             /* set by ds_generate_params_init */
  const int32_t* prompt_ids;        /* appended before decoding (timed as prefill); may be NULL */
  size_t n_prompt_ids;
  const char* prompt_text;          /* or text, tokenized first; may be NULL */
  size_t prompt_text_len;
  int32_t add_special;              /* for prompt_text: prepend BOS (default 0: chat text has it) */
  uint32_t max_tokens;              /* 0 (default): until EOS, a stop, or the context is full */
  const int32_t* stop_ids;          /* extra tokens that stop generation */
  size_t n_stop_ids;
  const char* const* stop_strings;  /* NUL-terminated; matched across token boundaries */
  size_t n_stop_strings;
  int32_t show_special;             /* non-zero: special tokens' text is emitted */
  int32_t override_sampling;        /* non-zero: use the fields below from this call on */
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  uint64_t seed;
} ds_generate_params;

typedef struct ds_generate_result {
  uint32_t struct_size;             /* set by the caller to sizeof(ds_generate_result) */
  int32_t stop_reason;              /* a ds_stop_reason */
  uint32_t n_prompt_tokens;
  uint32_t n_generated_tokens;
  double prefill_seconds;
  double decode_seconds;
  double prefill_tokens_per_second;
  double decode_tokens_per_second;
} ds_generate_result;

DS_API void ds_generate_params_init(ds_generate_params* params);

/* Appends the prompt (if any) and decodes until a stop condition, streaming text through
 * `on_piece` (may be NULL). `result` (may be NULL) says why it stopped and how fast it ran.
 * A cancel or a full context is a normal stop (DS_OK with the reason), not an error. */
DS_API ds_status ds_session_generate(ds_session* session, const ds_generate_params* params,
                                     ds_piece_callback on_piece, void* user_data,
                                     ds_generate_result* result);

/* Stops the ds_session_generate or ds_session_append running on `session` at the next token or
 * prefill chunk. Safe from any thread; a no-op when nothing runs. */
DS_API void ds_session_cancel(ds_session* session);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DS_C_H_ */
