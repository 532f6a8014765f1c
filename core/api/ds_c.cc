// ds_c.h implemented: handles around the C++ engine, absl::Status turned into ds_status plus a
// thread-local message exactly here, and no exception let through.
#include "ds_c.h"

#include <cstring>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/engine.h"
#include "core/generate.h"
#include "core/session.h"
#include "core/spec/speculator.h"

struct ds_engine {
  std::shared_ptr<ds::Engine> engine;
};

struct ds_session {
  std::unique_ptr<ds::Session> session;
};

namespace {

thread_local std::string last_error;

ds_status ToDsStatus(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk: return DS_OK;
    case absl::StatusCode::kInvalidArgument: return DS_ERR_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound: return DS_ERR_NOT_FOUND;
    case absl::StatusCode::kDataLoss: return DS_ERR_FORMAT;
    case absl::StatusCode::kUnimplemented: return DS_ERR_UNSUPPORTED;
    case absl::StatusCode::kResourceExhausted: return DS_ERR_OUT_OF_MEMORY;
    case absl::StatusCode::kOutOfRange: return DS_ERR_CONTEXT_FULL;
    case absl::StatusCode::kUnavailable: return DS_ERR_BACKEND;
    case absl::StatusCode::kCancelled: return DS_ERR_CANCELLED;
    case absl::StatusCode::kFailedPrecondition: return DS_ERR_INVALID_STATE;
    default: return DS_ERR_INTERNAL;
  }
}

ds_status Fail(ds_status status, std::string message) {
  last_error = std::move(message);
  return status;
}

ds_status Report(const absl::Status& s) {
  if (s.ok()) return DS_OK;
  return Fail(ToDsStatus(s), std::string(s.message()));
}

// Runs body, turning any exception into a status: nothing C++ crosses the ABI.
template <typename F>
ds_status Guard(const char* function, F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Fail(DS_ERR_OUT_OF_MEMORY, absl::StrCat(function, ": out of memory"));
  } catch (const std::exception& e) {
    return Fail(DS_ERR_INTERNAL, absl::StrCat(function, ": ", e.what()));
  } catch (...) {
    return Fail(DS_ERR_INTERNAL, absl::StrCat(function, ": unknown exception"));
  }
}

ds_status NullArgument(const char* function, const char* name) {
  return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat(function, ": ", name, " is NULL"));
}

// Copies the caller's option struct over the defaults, up to the size the caller knows.
template <typename T>
ds_status ReadOptions(const T* given, T* out, void (*init)(T*), const char* function) {
  init(out);
  if (!given) return DS_OK;
  if (given->struct_size < sizeof(uint32_t) || given->struct_size > sizeof(T))
    return Fail(DS_ERR_INVALID_ARGUMENT,
                absl::StrCat(function, ": options.struct_size is ", given->struct_size,
                             "; set it with the *_options_init function (this library knows up to ",
                             sizeof(T), " bytes)"));
  std::memcpy(static_cast<void*>(out), given, given->struct_size);
  out->struct_size = sizeof(T);
  return DS_OK;
}

// "Pass capacity, get required size".
template <typename T>
ds_status CopyOut(const T* data, size_t n, T* out, size_t capacity, size_t* n_out, const char* function) {
  if (n_out) *n_out = n;
  if (n > capacity)
    return Fail(DS_ERR_BUFFER_TOO_SMALL, absl::StrCat(function, ": needs room for ", n, ", capacity is ", capacity));
  if (n > 0 && !out) return NullArgument(function, "the output buffer");
  if (n > 0) std::memcpy(out, data, n * sizeof(T));
  return DS_OK;
}

ds_status TokenizerOf(const ds_engine* engine, const ds::Tokenizer** out, const char* function) {
  if (!engine) return NullArgument(function, "engine");
  auto tokenizer = engine->engine->tokenizer();
  if (!tokenizer.ok()) {
    const ds_status s = Report(tokenizer.status());
    last_error = absl::StrCat(function, ": no tokenizer: ", last_error);
    return s;
  }
  *out = *tokenizer;
  return DS_OK;
}

void CopyString(char* dst, size_t cap, const std::string& src) {
  const size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

extern "C" {

uint32_t ds_version(void) { return DS_API_VERSION; }

const char* ds_last_error(void) { return last_error.c_str(); }

const char* ds_status_name(ds_status status) {
  switch (status) {
    case DS_OK: return "DS_OK";
    case DS_ERR_INVALID_ARGUMENT: return "DS_ERR_INVALID_ARGUMENT";
    case DS_ERR_NOT_FOUND: return "DS_ERR_NOT_FOUND";
    case DS_ERR_FORMAT: return "DS_ERR_FORMAT";
    case DS_ERR_UNSUPPORTED: return "DS_ERR_UNSUPPORTED";
    case DS_ERR_OUT_OF_MEMORY: return "DS_ERR_OUT_OF_MEMORY";
    case DS_ERR_CONTEXT_FULL: return "DS_ERR_CONTEXT_FULL";
    case DS_ERR_BACKEND: return "DS_ERR_BACKEND";
    case DS_ERR_CANCELLED: return "DS_ERR_CANCELLED";
    case DS_ERR_INVALID_STATE: return "DS_ERR_INVALID_STATE";
    case DS_ERR_INTERNAL: return "DS_ERR_INTERNAL";
    case DS_ERR_BUFFER_TOO_SMALL: return "DS_ERR_BUFFER_TOO_SMALL";
  }
  return "DS_ERR_UNKNOWN";
}

void ds_engine_options_init(ds_engine_options* o) {
  if (!o) return;
  std::memset(static_cast<void*>(o), 0, sizeof(*o));
  o->struct_size = sizeof(*o);
  o->backend = DS_BACKEND_CPU;
  o->n_threads = 0;
  o->compute_dtype = DS_COMPUTE_AUTO;
}

ds_status ds_engine_open(const char* model_dir, const ds_engine_options* options, ds_engine** out) {
  return Guard("ds_engine_open", [&]() -> ds_status {
    if (!out) return NullArgument("ds_engine_open", "out");
    *out = nullptr;
    if (!model_dir) return NullArgument("ds_engine_open", "model_dir");
    ds_engine_options o;
    if (ds_status s = ReadOptions(options, &o, ds_engine_options_init, "ds_engine_open"); s != DS_OK) return s;
    ds::EngineOptions eo;
    switch (o.backend) {  // an int32_t: any value a caller passes is safe to switch on
      case DS_BACKEND_AUTO: eo.backend = ds::BackendKind::kAuto; break;
      case DS_BACKEND_CPU: eo.backend = ds::BackendKind::kCpu; break;
      case DS_BACKEND_CUDA: eo.backend = ds::BackendKind::kCuda; break;
      default:
        return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_engine_open: unknown backend ", static_cast<int>(o.backend)));
    }
    switch (o.compute_dtype) {
      case DS_COMPUTE_AUTO: eo.compute = ds::ComputeType::kAuto; break;
      case DS_COMPUTE_F32: eo.compute = ds::ComputeType::kF32; break;
      case DS_COMPUTE_BF16: eo.compute = ds::ComputeType::kBF16; break;
      default:
        return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_engine_open: unknown compute_dtype ", static_cast<int>(o.compute_dtype)));
    }
    eo.n_threads = o.n_threads;
    if (o.device < 0) return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_engine_open: device must be >= 0, got ", o.device));
    eo.device = o.device;
    switch (o.weight_format) {
      case DS_WEIGHTS_F32: eo.weight_dtype = ds::DType::kF32; break;
      case DS_WEIGHTS_BF16: eo.weight_dtype = ds::DType::kBF16; break;
      case DS_WEIGHTS_INT8: eo.weight_dtype = ds::DType::kQ8_0; break;
      case DS_WEIGHTS_INT4: eo.weight_dtype = ds::DType::kQ4_0; break;
      default:
        return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_engine_open: unknown weight_format ", o.weight_format));
    }
    if (o.progress) {
      ds_progress_callback cb = o.progress;
      void* user = o.progress_user_data;
      eo.progress = [cb, user](uint64_t done, uint64_t total, const char* stage) { cb(user, done, total, stage); };
    }
    auto engine = ds::Engine::Open(model_dir, eo);
    if (!engine.ok()) return Report(engine.status());
    *out = new ds_engine{*std::move(engine)};
    return DS_OK;
  });
}

void ds_engine_close(ds_engine* engine) { delete engine; }

ds_status ds_engine_info(const ds_engine* engine, ds_model_info* info) {
  return Guard("ds_engine_info", [&]() -> ds_status {
    if (!engine) return NullArgument("ds_engine_info", "engine");
    if (!info) return NullArgument("ds_engine_info", "info");
    if (info->struct_size < sizeof(uint32_t) || info->struct_size > sizeof(ds_model_info))
      return Fail(DS_ERR_INVALID_ARGUMENT, "ds_engine_info: set info->struct_size to sizeof(ds_model_info)");
    const ds::Engine& e = *engine->engine;
    const ds::ModelConfig& c = e.config();
    ds_model_info full;
    std::memset(static_cast<void*>(&full), 0, sizeof(full));
    full.struct_size = info->struct_size;
    CopyString(full.model_type, sizeof(full.model_type), c.model_type);
    full.n_vocab = static_cast<uint32_t>(c.vocab_size);
    full.n_layers = static_cast<uint32_t>(c.num_hidden_layers);
    full.hidden_size = static_cast<uint32_t>(c.hidden_size);
    full.max_position_embeddings = static_cast<uint32_t>(c.max_position_embeddings);
    full.n_mtp_layers = static_cast<uint32_t>(e.model().n_mtp_layers());
    full.bos_token_id = c.bos_token_id;
    full.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
    full.n_parameters = e.n_parameters();
    full.weight_bytes = e.weight_bytes();
    CopyString(full.backend, sizeof(full.backend), e.backend().name());
    full.has_tokenizer = e.tokenizer().ok() ? 1 : 0;
    int64_t per_layer = 0;
    for (int64_t width : e.model().CacheWidths()) per_layer += width * static_cast<int64_t>(sizeof(float));
    full.kv_bytes_per_token = static_cast<uint64_t>(per_layer * e.model().n_layers());
    if (auto tokenizer = e.tokenizer(); tokenizer.ok()) {
      if ((*tokenizer)->bos_id() >= 0) full.bos_token_id = (*tokenizer)->bos_id();
      if ((*tokenizer)->eos_id() >= 0) full.eos_token_id = (*tokenizer)->eos_id();
    }
    std::memcpy(static_cast<void*>(info), &full, info->struct_size);
    return DS_OK;
  });
}

void ds_session_options_init(ds_session_options* o) {
  if (!o) return;
  std::memset(static_cast<void*>(o), 0, sizeof(*o));
  o->struct_size = sizeof(*o);
  o->n_ctx = 0;
  o->temperature = 0.0f;
  o->top_k = 0;
  o->top_p = 1.0f;
  o->min_p = 0.0f;
  o->seed = 0;
  o->logits_all = 0;
  o->speculative_method = DS_SPECULATIVE_NONE;
  o->draft_tokens = 4;
  o->draft_adaptive = 0;
  o->draft_engine = nullptr;
  o->ngram_min = 1;
  o->ngram_max = 3;
}

ds_status ds_session_create(ds_engine* engine, const ds_session_options* options, ds_session** out) {
  return Guard("ds_session_create", [&]() -> ds_status {
    if (!out) return NullArgument("ds_session_create", "out");
    *out = nullptr;
    if (!engine) return NullArgument("ds_session_create", "engine");
    ds_session_options o;
    if (ds_status s = ReadOptions(options, &o, ds_session_options_init, "ds_session_create"); s != DS_OK) return s;
    ds::SessionOptions so;
    so.n_ctx = o.n_ctx;
    so.sampling = {.temperature = o.temperature, .top_k = o.top_k, .top_p = o.top_p, .min_p = o.min_p, .seed = o.seed};
    so.logits_all = o.logits_all != 0;
    if (o.speculative_method != DS_SPECULATIVE_NONE) {
      auto spec = std::make_shared<ds::SpeculativeOptions>();
      switch (o.speculative_method) {
        case DS_SPECULATIVE_DRAFT: spec->method = ds::SpeculativeMethod::kDraft; break;
        case DS_SPECULATIVE_MTP: spec->method = ds::SpeculativeMethod::kMtp; break;
        case DS_SPECULATIVE_NGRAM: spec->method = ds::SpeculativeMethod::kNgram; break;
        default:
          return Fail(DS_ERR_INVALID_ARGUMENT,
                      absl::StrCat("ds_session_create: unknown speculative_method ", o.speculative_method));
      }
      spec->k = o.draft_tokens;
      spec->adaptive = o.draft_adaptive != 0;
      if (o.draft_engine) spec->draft_engine = o.draft_engine->engine;
      spec->ngram_min = o.ngram_min;
      spec->ngram_max = o.ngram_max;
      so.speculative = std::move(spec);
    }
    auto session = ds::Session::Create(engine->engine, so);
    if (!session.ok()) return Report(session.status());
    *out = new ds_session{*std::move(session)};
    return DS_OK;
  });
}

void ds_session_close(ds_session* session) { delete session; }

ds_status ds_session_append(ds_session* session, const int32_t* ids, size_t n) {
  return Guard("ds_session_append", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_append", "session");
    if (!ids && n > 0) return NullArgument("ds_session_append", "ids");
    return Report(session->session->Append({ids, n}));
  });
}

ds_status ds_session_logits(ds_session* session, const float** logits, size_t* n_vocab) {
  return Guard("ds_session_logits", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_logits", "session");
    if (!logits) return NullArgument("ds_session_logits", "logits");
    const ds::Session& s = *session->session;
    if (!s.has_logits()) return Fail(DS_ERR_INVALID_STATE, "ds_session_logits: no logits yet: append tokens first");
    *logits = s.logits();
    if (n_vocab) *n_vocab = static_cast<size_t>(s.n_vocab());
    return DS_OK;
  });
}

ds_status ds_session_all_logits(ds_session* session, const float** logits, size_t* n_rows, size_t* n_vocab) {
  return Guard("ds_session_all_logits", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_all_logits", "session");
    if (!logits) return NullArgument("ds_session_all_logits", "logits");
    const ds::Session& s = *session->session;
    if (!s.has_logits()) return Fail(DS_ERR_INVALID_STATE, "ds_session_all_logits: no logits yet: append tokens first");
    *logits = s.all_logits().data();
    if (n_rows) *n_rows = s.all_logits().size() / static_cast<size_t>(s.n_vocab());
    if (n_vocab) *n_vocab = static_cast<size_t>(s.n_vocab());
    return DS_OK;
  });
}

ds_status ds_session_next_token(ds_session* session, int32_t* token) {
  return Guard("ds_session_next_token", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_next_token", "session");
    if (!token) return NullArgument("ds_session_next_token", "token");
    auto t = session->session->NextToken();
    if (!t.ok()) return Report(t.status());
    *token = *t;
    return DS_OK;
  });
}

ds_status ds_session_truncate(ds_session* session, size_t n_tokens) {
  return Guard("ds_session_truncate", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_truncate", "session");
    session->session->DropAhead();
    if (n_tokens > static_cast<size_t>(session->session->n_tokens()))
      return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_session_truncate: cannot keep ", n_tokens,
                                                        " tokens: the session holds ", session->session->n_tokens()));
    return Report(session->session->Truncate(static_cast<int64_t>(n_tokens)));
  });
}

ds_status ds_session_reset(ds_session* session) {
  return Guard("ds_session_reset", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_reset", "session");
    session->session->Reset();
    return DS_OK;
  });
}

size_t ds_session_n_tokens(const ds_session* session) {
  return session ? static_cast<size_t>(session->session->n_tokens() - session->session->n_ahead()) : 0;
}

ds_status ds_session_stats_get(const ds_session* session, ds_session_stats* stats) {
  return Guard("ds_session_stats_get", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_stats_get", "session");
    if (!stats) return NullArgument("ds_session_stats_get", "stats");
    if (stats->struct_size < sizeof(uint32_t) || stats->struct_size > sizeof(ds_session_stats))
      return Fail(DS_ERR_INVALID_ARGUMENT, "ds_session_stats_get: set stats->struct_size to sizeof(ds_session_stats)");
    ds_session_stats full;
    std::memset(static_cast<void*>(&full), 0, sizeof(full));
    full.struct_size = stats->struct_size;
    if (const ds::SpeculativeStats* s = session->session->speculative_stats()) {
      full.target_passes = static_cast<uint64_t>(s->target_passes);
      full.drafted_tokens = static_cast<uint64_t>(s->drafted);
      full.accepted_tokens = static_cast<uint64_t>(s->accepted);
      full.mean_accepted_length = s->target_passes ? static_cast<double>(s->emitted) / s->target_passes : 0.0;
      full.draft_seconds = s->draft_seconds;
      full.verify_seconds = s->verify_seconds;
    }
    std::memcpy(static_cast<void*>(stats), &full, stats->struct_size);
    return DS_OK;
  });
}

ds_status ds_tokenize(const ds_engine* engine, const char* text, size_t len, int add_special, int32_t* ids,
                      size_t capacity, size_t* n_ids) {
  return Guard("ds_tokenize", [&]() -> ds_status {
    const ds::Tokenizer* tokenizer = nullptr;
    if (ds_status s = TokenizerOf(engine, &tokenizer, "ds_tokenize"); s != DS_OK) return s;
    if (!text && len > 0) return NullArgument("ds_tokenize", "text");
    auto encoded = tokenizer->Encode(absl::string_view(text ? text : "", len), add_special != 0);
    if (!encoded.ok()) return Report(encoded.status());
    return CopyOut(encoded->data(), encoded->size(), ids, capacity, n_ids, "ds_tokenize");
  });
}

ds_status ds_detokenize(const ds_engine* engine, const int32_t* ids, size_t n, char* buf, size_t capacity,
                        size_t* len) {
  return Guard("ds_detokenize", [&]() -> ds_status {
    const ds::Tokenizer* tokenizer = nullptr;
    if (ds_status s = TokenizerOf(engine, &tokenizer, "ds_detokenize"); s != DS_OK) return s;
    if (!ids && n > 0) return NullArgument("ds_detokenize", "ids");
    auto text = tokenizer->Decode(std::vector<int32_t>(ids, ids + n), /*keep_special=*/true);
    if (!text.ok()) return Report(text.status());
    return CopyOut(text->data(), text->size(), buf, capacity, len, "ds_detokenize");
  });
}

ds_status ds_token_to_piece(const ds_engine* engine, int32_t token, char* buf, size_t capacity, size_t* len) {
  return Guard("ds_token_to_piece", [&]() -> ds_status {
    const ds::Tokenizer* tokenizer = nullptr;
    if (ds_status s = TokenizerOf(engine, &tokenizer, "ds_token_to_piece"); s != DS_OK) return s;
    auto bytes = tokenizer->TokenBytes(token);
    if (!bytes.ok()) return Report(bytes.status());
    return CopyOut(bytes->data(), bytes->size(), buf, capacity, len, "ds_token_to_piece");
  });
}

ds_status ds_chat_apply(const ds_engine* engine, const ds_chat_message* messages, size_t n,
                        int add_generation_prompt, char* buf, size_t capacity, size_t* len) {
  return Guard("ds_chat_apply", [&]() -> ds_status {
    if (!engine) return NullArgument("ds_chat_apply", "engine");
    if (!messages && n > 0) return NullArgument("ds_chat_apply", "messages");
    auto chat = engine->engine->chat_template();
    if (!chat.ok()) return Report(chat.status());
    std::vector<ds::ChatMessage> list;
    for (size_t i = 0; i < n; ++i) {
      if (!messages[i].role || !messages[i].content)
        return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_chat_apply: message ", i, " has a NULL role or content"));
      list.push_back({messages[i].role, messages[i].content});
    }
    auto text = (*chat)->Apply(list, add_generation_prompt != 0);
    if (!text.ok()) return Report(text.status());
    return CopyOut(text->data(), text->size(), buf, capacity, len, "ds_chat_apply");
  });
}

void ds_generate_params_init(ds_generate_params* p) {
  if (!p) return;
  std::memset(static_cast<void*>(p), 0, sizeof(*p));
  p->struct_size = sizeof(*p);
  p->top_p = 1.0f;
}

ds_status ds_session_generate(ds_session* session, const ds_generate_params* params, ds_piece_callback on_piece,
                              void* user_data, ds_generate_result* result) {
  return Guard("ds_session_generate", [&]() -> ds_status {
    if (!session) return NullArgument("ds_session_generate", "session");
    if (result && (result->struct_size < sizeof(uint32_t) || result->struct_size > sizeof(ds_generate_result)))
      return Fail(DS_ERR_INVALID_ARGUMENT, "ds_session_generate: set result->struct_size to sizeof(ds_generate_result)");
    ds_generate_params p;
    if (ds_status s = ReadOptions(params, &p, ds_generate_params_init, "ds_session_generate"); s != DS_OK) return s;
    ds::Session& s = *session->session;
    auto tokenizer = s.engine().tokenizer();
    if (!tokenizer.ok()) return Report(tokenizer.status());

    ds::GenerateParams gp;
    if (p.n_prompt_ids > 0) {
      if (!p.prompt_ids) return NullArgument("ds_session_generate", "params.prompt_ids");
      gp.prompt.assign(p.prompt_ids, p.prompt_ids + p.n_prompt_ids);
    }
    if (p.prompt_text_len > 0) {
      if (!p.prompt_text) return NullArgument("ds_session_generate", "params.prompt_text");
      auto ids = (*tokenizer)->Encode(absl::string_view(p.prompt_text, p.prompt_text_len), p.add_special != 0);
      if (!ids.ok()) return Report(ids.status());
      gp.prompt.insert(gp.prompt.end(), ids->begin(), ids->end());
    }
    gp.max_tokens = p.max_tokens;
    if (p.n_stop_ids > 0) {
      if (!p.stop_ids) return NullArgument("ds_session_generate", "params.stop_ids");
      gp.stop_ids.assign(p.stop_ids, p.stop_ids + p.n_stop_ids);
    }
    for (size_t i = 0; i < p.n_stop_strings; ++i) {
      if (!p.stop_strings || !p.stop_strings[i]) return NullArgument("ds_session_generate", "params.stop_strings");
      gp.stop_strings.emplace_back(p.stop_strings[i]);
    }
    gp.show_special = p.show_special != 0;
    if (p.override_sampling)
      gp.sampling = ds::SamplingParams{.temperature = p.temperature, .top_k = p.top_k, .top_p = p.top_p,
                                       .min_p = p.min_p, .seed = p.seed};
    ds::PieceFn piece;
    if (on_piece)
      piece = [on_piece, user_data](absl::string_view text, int32_t token, uint32_t flags) {
        return on_piece(user_data, text.data(), text.size(), token, flags) != 0;
      };
    auto r = ds::Generate(s, **tokenizer, gp, piece);
    if (!r.ok()) return Report(r.status());
    if (result) {
      ds_generate_result full;
      std::memset(static_cast<void*>(&full), 0, sizeof(full));
      full.struct_size = result->struct_size;
      full.stop_reason = static_cast<int32_t>(r->stop_reason);
      full.n_prompt_tokens = static_cast<uint32_t>(r->n_prompt);
      full.n_generated_tokens = static_cast<uint32_t>(r->n_generated);
      full.prefill_seconds = r->prefill_seconds;
      full.decode_seconds = r->decode_seconds;
      full.prefill_tokens_per_second = r->prefill_seconds > 0 ? r->n_prompt / r->prefill_seconds : 0;
      full.decode_tokens_per_second = r->decode_seconds > 0 ? r->n_generated / r->decode_seconds : 0;
      std::memcpy(static_cast<void*>(result), &full, result->struct_size);
    }
    return DS_OK;
  });
}

void ds_session_cancel(ds_session* session) {
  if (session) session->session->Cancel();
}

}  // extern "C"
