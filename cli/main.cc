// ds: run DeepSeek-R1 family models from the command line.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

#include "cli/cli.h"

namespace ds_cli {

namespace {

constexpr const char* kUsage = R"(ds - run DeepSeek-V3/R1 and the R1 distills (Qwen2, Llama) from Hugging Face folders

usage: ds <command> [flags]

commands:
  run         generate an answer to one prompt          ds run -m MODEL_DIR -p "Why is the sky blue?"
  chat        talk with the model (history stays in the KV cache)   ds chat -m MODEL_DIR
  info        architecture, parameters and memory of a model        ds info -m MODEL_DIR
  bench       prefill and decode speed                              ds bench -m MODEL_DIR
  make-model  write a model folder with random weights (for trying ds and for benchmarks)
              ds make-model --arch deepseek_v3 --tokenizer TOKENIZER_DIR OUT_DIR

'ds <command> --help' lists a command's flags.
)";

bool Number(const char* flag, const char* text, double& out) {
  char* end = nullptr;
  out = std::strtod(text, &end);
  if (end == text || *end != '\0') {
    std::fprintf(stderr, "ds: %s expects a number, got '%s'\n", flag, text);
    return false;
  }
  return true;
}

void ShowProgress(void*, uint64_t done, uint64_t total, const char* stage) {
  if (!isatty(fileno(stderr))) return;
  const int width = 30;
  const double fraction = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  std::fprintf(stderr, "\r%s [%-*.*s] %3.0f%%", stage, width, static_cast<int>(fraction * width),
               "##############################", fraction * 100);
  if (done >= total) std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

}  // namespace

const char* CommonHelp() {
  return R"(  -m, --model DIR        Hugging Face model folder (config.json, *.safetensors, tokenizer.json)
  --backend cpu|cuda|auto  compute backend (default cpu)
  --device N             CUDA device (default 0)
  -t, --threads N        CPU threads (default: the physical cores it may run on)
  --weights FORMAT       f32 (exact, default), bf16 (half the bytes per token), or int8 / int4
                         (llama.cpp's Q8_0 / Q4_0 blocks: 8.5 / 4.5 bits per weight, CPU only)
  --compute auto|f32|bf16  compute precision (auto: f32 on the CPU, bf16 on CUDA; bf16 on the CPU:
                           prompt matmuls with bf16 products where it has AVX512_BF16)
  -c, --ctx N            context length in tokens (default 4096)
  -n, --max-tokens N     most tokens to generate (default 512)
  --temp T               sampling temperature; 0 = greedy (default: the model's generation_config.json, else 0)
  --top-k K  --top-p P  --min-p P  --seed S   sampling filters and seed
  --system TEXT          system prompt
  --raw                  send the prompt as is, without the chat template
  --hide-reasoning       do not print R1's <think> block
  --show-special         print special tokens
  -q, --quiet            no progress bar or statistics
  --speculative ngram|mtp|draft   speculative decoding: prompt lookup, DeepSeek's MTP layer, or a draft model
  --draft-model DIR      the draft model for --speculative draft (same vocabulary, e.g. R1-Distill-Qwen-1.5B)
  --draft-tokens K       tokens drafted per model pass (default 4)   --adaptive   let K follow acceptance
)";
}

bool ParseCommon(int argc, char** argv, int first, CommonOptions& o, std::vector<std::string>& rest) {
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](double& out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ds: %s needs a value\n", a.c_str());
        return false;
      }
      return Number(a.c_str(), argv[++i], out);
    };
    double v = 0;
    if ((a == "-m" || a == "--model") && i + 1 < argc) {
      o.model_dir = argv[++i];
    } else if (a == "--backend" && i + 1 < argc) {
      const std::string b = argv[++i];
      if (b == "cpu") o.backend = DS_BACKEND_CPU;
      else if (b == "cuda") o.backend = DS_BACKEND_CUDA;
      else if (b == "auto") o.backend = DS_BACKEND_AUTO;
      else {
        std::fprintf(stderr, "ds: --backend is cpu, cuda or auto, not '%s'\n", b.c_str());
        return false;
      }
    } else if (a == "--device") {
      if (!value(v)) return false;
      o.device = static_cast<int>(v);
    } else if (a == "-t" || a == "--threads") {
      if (!value(v)) return false;
      o.threads = static_cast<int>(v);
    } else if (a == "-c" || a == "--ctx") {
      if (!value(v)) return false;
      o.n_ctx = static_cast<uint32_t>(v);
    } else if (a == "-n" || a == "--max-tokens") {
      if (!value(v)) return false;
      o.max_tokens = static_cast<int>(v);
    } else if (a == "--temp") {
      if (!value(v)) return false;
      o.temperature = static_cast<float>(v);
    } else if (a == "--top-k") {
      if (!value(v)) return false;
      o.top_k = static_cast<int>(v);
    } else if (a == "--top-p") {
      if (!value(v)) return false;
      o.top_p = static_cast<float>(v);
    } else if (a == "--min-p") {
      if (!value(v)) return false;
      o.min_p = static_cast<float>(v);
    } else if (a == "--seed") {
      if (!value(v)) return false;
      o.seed = static_cast<uint64_t>(v);
    } else if (a == "--system" && i + 1 < argc) {
      o.system = argv[++i];
    } else if (a == "--raw") {
      o.raw = true;
    } else if (a == "--hide-reasoning") {
      o.hide_reasoning = true;
    } else if (a == "--show-special") {
      o.show_special = true;
    } else if (a == "--weights" && i + 1 < argc) {
      const std::string f = argv[++i];
      if (f == "f32") {
        o.weight_format = DS_WEIGHTS_F32;
      } else if (f == "bf16") {
        o.weight_format = DS_WEIGHTS_BF16;
      } else if (f == "int8") {
        o.weight_format = DS_WEIGHTS_INT8;
      } else if (f == "int4") {
        o.weight_format = DS_WEIGHTS_INT4;
      } else {
        std::fprintf(stderr, "ds: --weights is f32, bf16, int8 or int4, not '%s'\n", f.c_str());
        return false;
      }
    } else if (a == "--compute" && i + 1 < argc) {
      const std::string f = argv[++i];
      if (f != "auto" && f != "f32" && f != "bf16") {
        std::fprintf(stderr, "ds: --compute is auto, f32 or bf16, not '%s'\n", f.c_str());
        return false;
      }
      o.compute = f == "f32" ? DS_COMPUTE_F32 : f == "bf16" ? DS_COMPUTE_BF16 : DS_COMPUTE_AUTO;
    } else if (a == "-q" || a == "--quiet") {
      o.quiet = true;
    } else if (a == "--speculative" && i + 1 < argc) {
      o.speculative = argv[++i];
      if (o.speculative != "ngram" && o.speculative != "mtp" && o.speculative != "draft") {
        std::fprintf(stderr, "ds: --speculative is ngram, mtp or draft, not '%s'\n", o.speculative.c_str());
        return false;
      }
    } else if (a == "--draft-model" && i + 1 < argc) {
      o.draft_model = argv[++i];
    } else if (a == "--draft-tokens") {
      if (!value(v)) return false;
      o.draft_tokens = static_cast<int>(v);
    } else if (a == "--adaptive") {
      o.adaptive = true;
    } else {
      rest.push_back(a);
    }
  }
  return true;
}

int Fail(const char* what, ds_status status) {
  std::fprintf(stderr, "ds: %s: %s: %s\n", what, ds_status_name(status), ds_last_error());
  return 1;
}

ds_engine* OpenEngine(const CommonOptions& o) {
  if (o.model_dir.empty()) {
    std::fprintf(stderr, "ds: no model: give -m MODEL_DIR\n");
    return nullptr;
  }
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.backend = o.backend;
  eo.n_threads = o.threads;
  eo.device = o.device;
  eo.weight_format = o.weight_format;
  eo.compute_dtype = o.compute;
  if (!o.quiet) eo.progress = ShowProgress;
  ds_engine* engine = nullptr;
  if (ds_status s = ds_engine_open(o.model_dir.c_str(), &eo, &engine); s != DS_OK) {
    Fail("cannot open the model", s);
    return nullptr;
  }
  return engine;
}

ds_session* NewSession(ds_engine* engine, const CommonOptions& o) {
  ds_session_options so;
  if (!SessionOptions(o, so)) return nullptr;
  ds_session* session = nullptr;
  if (ds_status s = ds_session_create(engine, &so, &session); s != DS_OK) {
    Fail("cannot start a session", s);
    return nullptr;
  }
  return session;
}

void PrintSpeculativeStats(ds_session* session) {
  ds_session_stats st;
  st.struct_size = sizeof st;
  if (ds_session_stats_get(session, &st) != DS_OK || st.target_passes == 0) return;
  std::fprintf(stderr, "[speculative: %llu passes, %llu of %llu drafts accepted, %.2f tokens per pass, "
                       "%.3f s drafting, %.3f s verifying]\n",
               static_cast<unsigned long long>(st.target_passes), static_cast<unsigned long long>(st.accepted_tokens),
               static_cast<unsigned long long>(st.drafted_tokens), st.mean_accepted_length, st.draft_seconds,
               st.verify_seconds);
}

bool SessionOptions(const CommonOptions& o, ds_session_options& so) {
  ds_session_options_init(&so);
  if (!o.speculative.empty()) {
    so.speculative_method = o.speculative == "ngram" ? DS_SPECULATIVE_NGRAM
                            : o.speculative == "mtp" ? DS_SPECULATIVE_MTP
                                                     : DS_SPECULATIVE_DRAFT;
    so.draft_tokens = o.draft_tokens;
    so.draft_adaptive = o.adaptive;
    if (so.speculative_method == DS_SPECULATIVE_DRAFT) {
      if (o.draft_model.empty()) {
        std::fprintf(stderr, "ds: --speculative draft needs --draft-model DIR\n");
        return false;
      }
      CommonOptions draft = o;
      draft.model_dir = o.draft_model;
      static ds_engine* draft_engine = nullptr;  // lives as long as the program
      if (!draft_engine && !(draft_engine = OpenEngine(draft))) return false;
      so.draft_engine = draft_engine;
    }
  }
  so.n_ctx = o.n_ctx;
  // R1 ships temperature 0.6 / top-p 0.95 in generation_config.json; use them unless told.
  float temperature = 0, top_p = 1;
  std::ifstream in(o.model_dir + "/generation_config.json");
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    auto read = [&text](const char* key, float& out) {
      const size_t at = text.find(std::string("\"") + key + "\"");
      if (at == std::string::npos) return;
      const size_t colon = text.find(':', at);
      if (colon != std::string::npos) out = std::strtof(text.c_str() + colon + 1, nullptr);
    };
    read("temperature", temperature);
    read("top_p", top_p);
    if (text.find("\"do_sample\": false") != std::string::npos) temperature = 0;
  }
  so.temperature = o.temperature >= 0 ? o.temperature : temperature;
  so.top_p = o.top_p > 0 ? o.top_p : top_p;
  so.top_k = o.top_k;
  so.min_p = o.min_p;
  so.seed = o.seed;
  return true;
}

}  // namespace ds_cli

int main(int argc, char** argv) {
  using namespace ds_cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (ds_version() != DS_API_VERSION) {
    std::fprintf(stderr, "ds: libds has ABI version %u, this program needs %u\n", ds_version(), DS_API_VERSION);
    return 1;
  }
  const std::string command = argv[1];
  if (command == "run") return RunCommand(argc, argv);
  if (command == "chat") return ChatCommand(argc, argv);
  if (command == "info") return InfoCommand(argc, argv);
  if (command == "bench") return BenchCommand(argc, argv);
  if (command == "make-model") return MakeModelCommand(argc, argv);
  std::fprintf(stderr, "ds: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}
