// ds make-model: writes a Hugging Face model folder (config.json + model.safetensors, the
// checkpoint's own tensor names) with random weights, in a real model's shape or a tiny one.
// For trying ds without a download, and for benchmarks of real shapes. Random weights produce
// gibberish text.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli.h"

namespace ds_cli {
namespace {

namespace fs = std::filesystem;

struct Shape {
  std::string arch;  // deepseek_v3, qwen2, llama
  int64_t vocab = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, max_positions = 0;
  double rope_theta = 10000, rms_eps = 1e-6;
  bool tie = false;
  // deepseek_v3
  int64_t q_lora = 0, kv_lora = 0, nope = 0, rope = 0, v = 0, experts = 0, top_k = 0, shared = 0, moe_intermediate = 0,
          first_dense = 1, groups = 1, topk_groups = 1, mtp = 0;
  // rope scaling: "yarn" (factor, original) or "llama3"
  std::string rope_scaling;
  double rope_factor = 1;
  int64_t rope_original = 0;
};

std::map<std::string, Shape> Presets() {
  std::map<std::string, Shape> p;
  // A small DeepSeek-V3/R1 layout (MLA with q_lora, YaRN, dense then MoE, MTP), real vocabulary.
  p["tiny"] = {.arch = "deepseek_v3", .vocab = 129280, .hidden = 128, .intermediate = 384, .layers = 3, .heads = 4,
               .kv_heads = 4, .max_positions = 163840, .q_lora = 96, .kv_lora = 64, .nope = 32, .rope = 16, .v = 32,
               .experts = 16, .top_k = 4, .shared = 1, .moe_intermediate = 64, .first_dense = 1, .groups = 4,
               .topk_groups = 2, .mtp = 1, .rope_scaling = "yarn", .rope_factor = 40, .rope_original = 4096};
  // DeepSeek-V2-Lite's shape with V3 routing (the CUDA issue's MoE benchmark shape).
  p["deepseek-v2-lite"] = {.arch = "deepseek_v3", .vocab = 102400, .hidden = 2048, .intermediate = 10944, .layers = 27,
                           .heads = 16, .kv_heads = 16, .max_positions = 163840, .q_lora = 0, .kv_lora = 512,
                           .nope = 128, .rope = 64, .v = 128, .experts = 64, .top_k = 6, .shared = 2,
                           .moe_intermediate = 1408, .first_dense = 1, .groups = 1, .topk_groups = 1,
                           .rope_scaling = "yarn", .rope_factor = 40, .rope_original = 4096};
  p["r1-distill-qwen-1.5b"] = {.arch = "qwen2", .vocab = 151936, .hidden = 1536, .intermediate = 8960, .layers = 28,
                               .heads = 12, .kv_heads = 2, .max_positions = 131072, .rope_theta = 10000};
  p["r1-distill-qwen-7b"] = {.arch = "qwen2", .vocab = 152064, .hidden = 3584, .intermediate = 18944, .layers = 28,
                             .heads = 28, .kv_heads = 4, .max_positions = 131072, .rope_theta = 10000};
  p["r1-distill-llama-8b"] = {.arch = "llama", .vocab = 128256, .hidden = 4096, .intermediate = 14336, .layers = 32,
                              .heads = 32, .kv_heads = 8, .max_positions = 131072, .rope_theta = 500000,
                              .rms_eps = 1e-5, .rope_scaling = "llama3", .rope_factor = 8, .rope_original = 8192};
  p["tiny-qwen2"] = {.arch = "qwen2", .vocab = 129280, .hidden = 128, .intermediate = 352, .layers = 2, .heads = 4,
                     .kv_heads = 2, .max_positions = 32768};
  p["tiny-llama"] = {.arch = "llama", .vocab = 129280, .hidden = 128, .intermediate = 352, .layers = 2, .heads = 4,
                     .kv_heads = 1, .max_positions = 32768, .rope_theta = 500000, .rms_eps = 1e-5,
                     .rope_scaling = "llama3", .rope_factor = 8, .rope_original = 8192};
  return p;
}

std::string ConfigJson(const Shape& s) {
  std::string j = "{\n";
  auto field = [&j](const std::string& key, const std::string& value) { j += "  \"" + key + "\": " + value + ",\n"; };
  auto num = [](double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.10g", x);
    return std::string(buf);
  };
  const std::string arch_class = s.arch == "deepseek_v3" ? "DeepseekV3ForCausalLM"
                                 : s.arch == "qwen2"     ? "Qwen2ForCausalLM"
                                                         : "LlamaForCausalLM";
  field("architectures", "[\"" + arch_class + "\"]");
  field("model_type", "\"" + s.arch + "\"");
  field("vocab_size", num(s.vocab));
  field("hidden_size", num(s.hidden));
  field("intermediate_size", num(s.intermediate));
  field("num_hidden_layers", num(s.layers));
  field("num_attention_heads", num(s.heads));
  field("num_key_value_heads", num(s.kv_heads));
  field("max_position_embeddings", num(s.max_positions));
  field("rms_norm_eps", num(s.rms_eps));
  field("rope_theta", num(s.rope_theta));
  field("hidden_act", "\"silu\"");
  field("tie_word_embeddings", s.tie ? "true" : "false");
  field("bos_token_id", "0");
  field("eos_token_id", "1");
  field("torch_dtype", "\"bfloat16\"");
  if (s.arch == "deepseek_v3") {
    field("q_lora_rank", s.q_lora ? num(s.q_lora) : "null");
    field("kv_lora_rank", num(s.kv_lora));
    field("qk_nope_head_dim", num(s.nope));
    field("qk_rope_head_dim", num(s.rope));
    field("v_head_dim", num(s.v));
    field("n_routed_experts", num(s.experts));
    field("num_experts_per_tok", num(s.top_k));
    field("n_shared_experts", num(s.shared));
    field("moe_intermediate_size", num(s.moe_intermediate));
    field("first_k_dense_replace", num(s.first_dense));
    field("moe_layer_freq", "1");
    field("n_group", num(s.groups));
    field("topk_group", num(s.topk_groups));
    field("norm_topk_prob", "true");
    field("routed_scaling_factor", "2.5");
    field("scoring_func", "\"sigmoid\"");
    field("topk_method", "\"noaux_tc\"");
    field("num_nextn_predict_layers", num(s.mtp));
  }
  if (s.rope_scaling == "yarn") {
    field("rope_scaling", "{\"type\": \"yarn\", \"factor\": " + num(s.rope_factor) +
                              ", \"original_max_position_embeddings\": " + num(s.rope_original) +
                              ", \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}");
  } else if (s.rope_scaling == "llama3") {
    field("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": " + num(s.rope_factor) +
                              ", \"original_max_position_embeddings\": " + num(s.rope_original) +
                              ", \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}");
  } else {
    field("rope_scaling", "null");
  }
  j.resize(j.size() - 2);  // the last ",\n"
  return j + "\n}\n";
}

// A tensor to write: its name, shape and how to fill it.
struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  enum Fill { kOnes, kNormal, kZeros } fill;
  double std = 0;
};

// The layers from `from` on write into the residual stream at `scale` times the usual size
// (their o_proj and down_proj weights): at a small scale the first `from` layers decide the
// output, and the model of those layers alone (the same seed, --layers from) drafts for it with
// high acceptance at a fraction of its cost.
struct Tail {
  int64_t from = -1;  // none
  double scale = 1;
};

std::vector<Entry> Tensors(const Shape& s, const Tail& tail) {
  std::vector<Entry> t;
  const double in_h = 1.0 / std::sqrt(static_cast<double>(s.hidden));
  auto linear = [&t](const std::string& name, int64_t out, int64_t in, double scale = 1) {
    t.push_back({name, {out, in}, Entry::kNormal, scale / std::sqrt(static_cast<double>(in))});
  };
  auto norm = [&t](const std::string& name, int64_t n) { t.push_back({name, {n}, Entry::kOnes}); };
  // residual_scale: of the projection that writes into the residual stream (down_proj).
  auto mlp = [&](const std::string& p, int64_t inter, double residual_scale) {
    linear(p + "gate_proj.weight", inter, s.hidden);
    linear(p + "up_proj.weight", inter, s.hidden);
    linear(p + "down_proj.weight", s.hidden, inter, residual_scale);
  };
  t.push_back({"model.embed_tokens.weight", {s.vocab, s.hidden}, Entry::kNormal, 1.0});
  auto block = [&](int64_t i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const double residual_scale = tail.from >= 0 && i >= tail.from && i < s.layers ? tail.scale : 1.0;
    norm(p + "input_layernorm.weight", s.hidden);
    norm(p + "post_attention_layernorm.weight", s.hidden);
    if (s.arch == "deepseek_v3") {
      const int64_t qk = s.nope + s.rope;
      if (s.q_lora) {
        linear(p + "self_attn.q_a_proj.weight", s.q_lora, s.hidden);
        norm(p + "self_attn.q_a_layernorm.weight", s.q_lora);
        linear(p + "self_attn.q_b_proj.weight", s.heads * qk, s.q_lora);
      } else {
        linear(p + "self_attn.q_proj.weight", s.heads * qk, s.hidden);
      }
      linear(p + "self_attn.kv_a_proj_with_mqa.weight", s.kv_lora + s.rope, s.hidden);
      norm(p + "self_attn.kv_a_layernorm.weight", s.kv_lora);
      linear(p + "self_attn.kv_b_proj.weight", s.heads * (s.nope + s.v), s.kv_lora);
      linear(p + "self_attn.o_proj.weight", s.hidden, s.heads * s.v, residual_scale);
      if (i < s.first_dense) {
        mlp(p + "mlp.", s.intermediate, residual_scale);
      } else {
        for (int64_t e = 0; e < s.experts; ++e)
          mlp(p + "mlp.experts." + std::to_string(e) + ".", s.moe_intermediate, residual_scale);
        t.push_back({p + "mlp.gate.weight", {s.experts, s.hidden}, Entry::kNormal, in_h});
        t.push_back({p + "mlp.gate.e_score_correction_bias", {s.experts}, Entry::kNormal, 0.01});
        if (s.shared) mlp(p + "mlp.shared_experts.", s.moe_intermediate * s.shared, residual_scale);
      }
    } else {
      const int64_t d = s.hidden / s.heads;
      linear(p + "self_attn.q_proj.weight", s.heads * d, s.hidden);
      linear(p + "self_attn.k_proj.weight", s.kv_heads * d, s.hidden);
      linear(p + "self_attn.v_proj.weight", s.kv_heads * d, s.hidden);
      linear(p + "self_attn.o_proj.weight", s.hidden, s.heads * d, residual_scale);
      if (s.arch == "qwen2") {
        t.push_back({p + "self_attn.q_proj.bias", {s.heads * d}, Entry::kNormal, 0.02});
        t.push_back({p + "self_attn.k_proj.bias", {s.kv_heads * d}, Entry::kNormal, 0.02});
        t.push_back({p + "self_attn.v_proj.bias", {s.kv_heads * d}, Entry::kNormal, 0.02});
      }
      mlp(p + "mlp.", s.intermediate, residual_scale);
    }
  };
  for (int64_t i = 0; i < s.layers; ++i) block(i);
  norm("model.norm.weight", s.hidden);
  if (!s.tie) t.push_back({"lm_head.weight", {s.vocab, s.hidden}, Entry::kNormal, in_h});
  // DeepSeek's MTP layer follows the main layers; it shares the main embedding and head here.
  for (int64_t m = 0; m < s.mtp; ++m) {
    const int64_t i = s.layers + m;
    const std::string p = "model.layers." + std::to_string(i) + ".";
    norm(p + "enorm.weight", s.hidden);
    norm(p + "hnorm.weight", s.hidden);
    linear(p + "eh_proj.weight", s.hidden, 2 * s.hidden);
    block(i);
    norm(p + "shared_head.norm.weight", s.hidden);
  }
  return t;
}

constexpr uint64_t kSplitMixStep = 0x9e3779b97f4a7c15ull;

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += kSplitMixStep);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

// The random streams of one tensor: SplitMix's state after k draws is its start + k steps, so
// any element's draws can be found without making the ones before it (chunks fill in parallel).
struct TensorStreams {
  uint64_t state, noise_state;  // before the tensor's first element
};

// A tensor's streams start from its name and the seed, so a tensor is the same whatever else the
// model holds: a model of fewer layers is the first layers of a deeper one.
TensorStreams StreamsFor(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (const unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  uint64_t mix = seed ^ h;
  const uint64_t state = SplitMix(mix);
  return {state, SplitMix(mix)};
}

// Elements [begin, end) of tensor t (begin even) into out (the tensor's bytes): two normals per
// two uniforms of `state` (Box-Muller), and with noise two more draws of `noise_state` each.
void FillRange(const Entry& t, uint64_t n, TensorStreams streams, bool f32, double noise, uint64_t begin,
               uint64_t end, char* out) {
  uint64_t state = streams.state + begin * kSplitMixStep;  // two draws per pair before it
  uint64_t noise_state = streams.noise_state + 2 * begin * kSplitMixStep;  // two per element
  for (uint64_t i = begin; i < end; i += 2) {
    const double u1 = (static_cast<double>(SplitMix(state) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(SplitMix(state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double z[2] = {r * std::cos(2 * M_PI * u2), r * std::sin(2 * M_PI * u2)};
    for (int k = 0; k < 2 && i + k < n; ++k) {
      float v = t.fill == Entry::kOnes ? 1.0f : t.fill == Entry::kZeros ? 0.0f : static_cast<float>(z[k] * t.std);
      if (noise > 0 && t.fill == Entry::kNormal) {
        const double n1 = (static_cast<double>(SplitMix(noise_state) >> 11) + 0.5) * 0x1.0p-53;
        const double n2 = static_cast<double>(SplitMix(noise_state) >> 11) * 0x1.0p-53;
        v += static_cast<float>(noise * t.std * std::sqrt(-2.0 * std::log(n1)) * std::cos(2 * M_PI * n2));
      }
      if (f32) {
        std::memcpy(out + (i + k) * 4, &v, 4);
      } else {
        const uint16_t b = ToBf16(v);
        std::memcpy(out + (i + k) * 2, &b, 2);
      }
    }
  }
}

// `noise` > 0 adds noise * std * N(0, 1) to every random weight, from its own random stream,
// so the same seed with and without noise gives a model and a perturbed copy of it (a draft
// whose agreement with the target falls as the noise grows).
bool Write(const Shape& s, const Tail& tail, const fs::path& out, uint64_t seed, bool f32, double noise) {
  const std::vector<Entry> tensors = Tensors(s, tail);
  const size_t elem = f32 ? 4 : 2;
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t n = 1;
    std::string shape;
    for (int64_t d : t.shape) {
      n *= static_cast<uint64_t>(d);
      shape += (shape.empty() ? "" : ",") + std::to_string(d);
    }
    header += ",\"" + t.name + "\":{\"dtype\":\"" + (f32 ? "F32" : "BF16") + "\",\"shape\":[" + shape +
              "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n * elem) + "]}";
    offset += n * elem;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data to 8 bytes
  std::ofstream file(out / "model.safetensors", std::ios::binary);
  const uint64_t header_len = header.size();
  for (int i = 0; i < 8; ++i) file.put(static_cast<char>((header_len >> (8 * i)) & 0xff));
  file << header;
  const unsigned n_threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<char> buffer;
  uint64_t written = 0;
  for (const auto& t : tensors) {
    uint64_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    buffer.resize(n * elem);
    // Even-sized chunks (a pair of normals never straddles two), one per thread.
    const uint64_t chunk = std::max<uint64_t>(1 << 16, (n / n_threads + 2) & ~uint64_t{1});
    const TensorStreams streams = StreamsFor(seed, t.name);
    std::vector<std::thread> workers;
    for (uint64_t begin = 0; begin < n; begin += chunk)
      workers.emplace_back(FillRange, std::cref(t), n, streams, f32, noise, begin, std::min(n, begin + chunk),
                           buffer.data());
    for (auto& w : workers) w.join();
    file.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    written += buffer.size();
    if (isatty(fileno(stderr)))
      std::fprintf(stderr, "\rwriting weights %3.0f%%", 100.0 * static_cast<double>(written) / static_cast<double>(offset));
  }
  if (isatty(fileno(stderr))) std::fprintf(stderr, "\r\033[K");
  return static_cast<bool>(file);
}

}  // namespace

int MakeModelCommand(int argc, char** argv) {
  std::string preset = "tiny", arch, tokenizer, out;
  uint64_t seed = 1;
  bool f32 = false;
  double noise = 0;
  int64_t layers = 0;
  Tail tail;
  const auto presets = Presets();
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--arch" && i + 1 < argc) {
      arch = argv[++i];
    } else if (a == "--preset" && i + 1 < argc) {
      preset = argv[++i];
    } else if (a == "--tokenizer" && i + 1 < argc) {
      tokenizer = argv[++i];
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--f32") {
      f32 = true;
    } else if (a == "--noise" && i + 1 < argc) {
      noise = std::strtod(argv[++i], nullptr);
    } else if (a == "--layers" && i + 1 < argc) {
      layers = std::strtoll(argv[++i], nullptr, 10);
    } else if (a == "--tail-from" && i + 1 < argc) {
      tail.from = std::strtoll(argv[++i], nullptr, 10);
    } else if (a == "--tail-scale" && i + 1 < argc) {
      tail.scale = std::strtod(argv[++i], nullptr);
    } else if (a == "-h" || a == "--help") {
      std::printf("usage: ds make-model [--arch deepseek_v3|qwen2|llama] [--preset NAME] [--tokenizer DIR] [--seed N] "
                  "[--f32] [--noise SIGMA] [--layers N] [--tail-from L --tail-scale S] OUT_DIR\n\nWrites config.json and "
                  "model.safetensors (bf16, or f32) with random weights, and copies tokenizer.json and "
                  "tokenizer_config.json from DIR. A tensor's weights depend on the seed and its name only.\n"
                  "--noise perturbs every weight by SIGMA times its scale (the same seed without it is the clean model: a "
                  "draft for benchmarks).\n--layers N keeps the preset's first N layers.\n--tail-from L --tail-scale S: "
                  "layers L and on write into the residual stream at S times the usual size, so the same seed with "
                  "--layers L is a cheap draft that mostly agrees with it (S = 0: exactly).\nPresets:");
      for (const auto& [name, s] : presets) std::printf(" %s (%s)", name.c_str(), s.arch.c_str());
      std::printf("\n--arch picks the tiny preset of that architecture. Random weights produce gibberish.\n");
      return 0;
    } else if (!a.empty() && a[0] != '-' && out.empty()) {
      out = a;
    } else {
      std::fprintf(stderr, "ds make-model: unknown argument '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (!arch.empty() && preset == "tiny") {
    if (arch == "qwen2") preset = "tiny-qwen2";
    else if (arch == "llama") preset = "tiny-llama";
    else if (arch != "deepseek_v3") {
      std::fprintf(stderr, "ds make-model: --arch is deepseek_v3, qwen2 or llama, not '%s'\n", arch.c_str());
      return 2;
    }
  }
  const auto it = presets.find(preset);
  if (it == presets.end()) {
    std::fprintf(stderr, "ds make-model: no preset '%s' (see --help)\n", preset.c_str());
    return 2;
  }
  if (out.empty()) {
    std::fprintf(stderr, "ds make-model: give the folder to write (see --help)\n");
    return 2;
  }
  Shape shape = it->second;
  if (layers != 0) {
    if (layers < 1 || layers > shape.layers || (shape.arch == "deepseek_v3" && layers < shape.first_dense)) {
      std::fprintf(stderr, "ds make-model: --layers is 1 to %lld for preset '%s', not %lld\n",
                   static_cast<long long>(shape.layers), preset.c_str(), static_cast<long long>(layers));
      return 2;
    }
    shape.layers = layers;
  }
  if ((tail.from != -1 && (tail.from < 0 || tail.from > shape.layers)) || !(tail.scale >= 0)) {
    std::fprintf(stderr, "ds make-model: --tail-from is 0 to %lld and --tail-scale at least 0\n",
                 static_cast<long long>(shape.layers));
    return 2;
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) {
    std::fprintf(stderr, "ds make-model: cannot create %s: %s\n", out.c_str(), ec.message().c_str());
    return 1;
  }
  std::ofstream(fs::path(out) / "config.json") << ConfigJson(shape);
  if (!tokenizer.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(fs::path(tokenizer) / name, fs::path(out) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        std::fprintf(stderr, "ds make-model: cannot copy %s from %s: %s\n", name, tokenizer.c_str(), ec.message().c_str());
        return 1;
      }
    }
  }
  if (!Write(shape, tail, out, seed, f32, noise)) {
    std::fprintf(stderr, "ds make-model: cannot write %s/model.safetensors\n", out.c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s: %s preset '%s' with random weights (its output is gibberish)\n", out.c_str(),
               it->second.arch.c_str(), preset.c_str());
  return 0;
}

}  // namespace ds_cli
