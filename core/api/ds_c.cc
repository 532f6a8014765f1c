// ds_c.h implemented: handles around the C++ engine, absl::Status turned into ds_status plus a
// thread-local message exactly here, and no exception let through.
#include "ds_c.h"

#include <cstring>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/engine.h"
#include "core/session.h"

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
    switch (o.backend) {
      case DS_BACKEND_AUTO: eo.backend = ds::BackendKind::kAuto; break;
      case DS_BACKEND_CPU: eo.backend = ds::BackendKind::kCpu; break;
      case DS_BACKEND_CUDA: eo.backend = ds::BackendKind::kCuda; break;
      default:
        return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_engine_open: unknown backend ", static_cast<int>(o.backend)));
    }
    if (o.compute_dtype == DS_COMPUTE_BF16)
      return Fail(DS_ERR_UNSUPPORTED, "ds_engine_open: bf16 compute is not available on the CPU backend yet (f32 is)");
    if (o.compute_dtype != DS_COMPUTE_AUTO && o.compute_dtype != DS_COMPUTE_F32)
      return Fail(DS_ERR_INVALID_ARGUMENT, absl::StrCat("ds_engine_open: unknown compute_dtype ", static_cast<int>(o.compute_dtype)));
    eo.n_threads = o.n_threads;
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
  return session ? static_cast<size_t>(session->session->n_tokens()) : 0;
}

}  // extern "C"
