// Writes a Qwen2/Llama model folder (config.json + safetensors, e.g. from `ds make-model`) as a GGUF
// file that llama.cpp loads, with every matrix in one format: F16, Q8_0 or Q4_0 (ggml's block
// layouts, which core/model/quant.h shares byte for byte), norms and biases in F32. For the race
// against llama.cpp (bench/race_llamacpp.sh): the same weights, at the same bits per weight.
// The vocabulary is placeholder strings ("t0", "t1", ...) with no merges: the race feeds token ids.
//
//   make_gguf MODEL_DIR OUT.gguf F16|Q8_0|Q4_0
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"
#include "core/model/safetensors.h"

namespace ds {
namespace {

// GGUF v3 (ggml's docs/gguf.md): little-endian; strings are u64 length + bytes.
enum GgufValueType : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kString = 8, kArray = 9 };
enum GgmlType : uint32_t { kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ8_0 = 8 };
constexpr uint64_t kAlignment = 32;

class Writer {
 public:
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Str(const std::string& s) {
    U64(s.size());
    Raw(s.data(), s.size());
  }
  void Raw(const void* p, size_t n) { bytes.append(static_cast<const char*>(p), n); }
  void Pad() { bytes.resize((bytes.size() + kAlignment - 1) / kAlignment * kAlignment, '\0'); }
  std::string bytes;
};

struct Tensor {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] is the row length
  GgmlType type;
  std::string data;
};

std::string Encode(const std::vector<float>& v, int64_t cols, GgmlType type) {
  std::string out;
  const int64_t rows = static_cast<int64_t>(v.size()) / cols;
  if (type == kGgmlF32) {
    out.assign(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  } else if (type == kGgmlF16) {
    for (float x : v) {
      const uint16_t h = F32ToF16(x);
      out.append(reinterpret_cast<const char*>(&h), 2);
    }
  } else {  // our Q8_0 / Q4_0 rows are ggml's bytes
    const DType dtype = type == kGgmlQ8_0 ? DType::kQ8_0 : DType::kQ4_0;
    const size_t row_bytes = RowBytes(dtype, cols);
    out.resize(rows * row_bytes);
    for (int64_t r = 0; r < rows; ++r) NarrowRow(dtype, &v[r * cols], cols, &out[r * row_bytes]);
  }
  return out;
}

int Run(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR OUT.gguf F16|Q8_0|Q4_0\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], out_path = argv[2], format = argv[3];
  const GgmlType matrix_type = format == "F16" ? kGgmlF16 : format == "Q8_0" ? kGgmlQ8_0 : format == "Q4_0" ? kGgmlQ4_0 : kGgmlF32;
  if (matrix_type == kGgmlF32) {
    std::fprintf(stderr, "make_gguf: format is F16, Q8_0 or Q4_0, not '%s'\n", format.c_str());
    return 2;
  }
  auto config = LoadModelConfig(dir);
  auto checkpoint = Checkpoint::Open(dir);
  if (!config.ok() || !checkpoint.ok()) {
    std::fprintf(stderr, "make_gguf: %s\n", std::string((config.ok() ? checkpoint.status() : config.status()).message()).c_str());
    return 1;
  }
  const ModelConfig& c = *config;
  if (c.model_type != "qwen2" && c.model_type != "llama") {
    std::fprintf(stderr, "make_gguf: %s: only qwen2 and llama models\n", dir.c_str());
    return 1;
  }
  std::vector<Tensor> tensors;
  bool ok = true;
  auto add = [&](const std::string& hf, const std::string& gguf, bool matrix) {
    const TensorEntry* t = checkpoint->Find(hf);
    if (!t || !IsFloatStorage(t->type) || t->type == StorageType::kF8E4M3) {
      std::fprintf(stderr, "make_gguf: %s: no float tensor '%s'\n", dir.c_str(), hf.c_str());
      ok = false;
      return;
    }
    std::vector<float> v(static_cast<size_t>(t->numel()));
    ConvertToF32(t->type, t->data, v.size(), v.data());
    const int64_t cols = t->shape.back();
    GgmlType type = matrix ? matrix_type : kGgmlF32;
    if (type != kGgmlF16 && type != kGgmlF32 && cols % kQuantBlock != 0) type = kGgmlF16;
    std::vector<uint64_t> ne;
    for (auto it = t->shape.rbegin(); it != t->shape.rend(); ++it) ne.push_back(static_cast<uint64_t>(*it));
    tensors.push_back({gguf, ne, type, Encode(v, cols, type)});
  };
  add("model.embed_tokens.weight", "token_embd.weight", true);
  add("model.norm.weight", "output_norm.weight", false);
  if (!c.tie_word_embeddings) add("lm_head.weight", "output.weight", true);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string hf = "model.layers." + std::to_string(i) + ".", g = "blk." + std::to_string(i) + ".";
    add(hf + "input_layernorm.weight", g + "attn_norm.weight", false);
    for (const char* p : {"q", "k", "v"}) {
      add(hf + "self_attn." + p + "_proj.weight", g + "attn_" + p + ".weight", true);
      if (c.qkv_bias) add(hf + "self_attn." + p + "_proj.bias", g + "attn_" + p + ".bias", false);
    }
    add(hf + "self_attn.o_proj.weight", g + "attn_output.weight", true);
    add(hf + "post_attention_layernorm.weight", g + "ffn_norm.weight", false);
    add(hf + "mlp.gate_proj.weight", g + "ffn_gate.weight", true);
    add(hf + "mlp.up_proj.weight", g + "ffn_up.weight", true);
    add(hf + "mlp.down_proj.weight", g + "ffn_down.weight", true);
  }
  if (!ok) return 1;

  Writer w;
  const std::string arch = c.model_type;
  int n_kv = 0;
  Writer kv;
  auto key = [&](const std::string& k, uint32_t type) {
    kv.Str(k);
    kv.U32(type);
    ++n_kv;
  };
  auto kv_u32 = [&](const std::string& k, uint32_t v) { key(k, kU32), kv.U32(v); };
  auto kv_f32 = [&](const std::string& k, float v) { key(k, kF32), kv.Raw(&v, 4); };
  auto kv_str = [&](const std::string& k, const std::string& v) { key(k, kString), kv.Str(v); };
  kv_str("general.architecture", arch);
  kv_str("general.name", "ds random " + arch);
  kv_u32("general.file_type", matrix_type == kGgmlF16 ? 1 : matrix_type == kGgmlQ8_0 ? 7 : 2);
  kv_u32("general.alignment", kAlignment);
  kv_u32(arch + ".context_length", static_cast<uint32_t>(c.max_position_embeddings));
  kv_u32(arch + ".embedding_length", static_cast<uint32_t>(c.hidden_size));
  kv_u32(arch + ".block_count", static_cast<uint32_t>(c.num_hidden_layers));
  kv_u32(arch + ".feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  kv_u32(arch + ".attention.head_count", static_cast<uint32_t>(c.num_attention_heads));
  kv_u32(arch + ".attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
  kv_f32(arch + ".rope.freq_base", static_cast<float>(c.rope_theta));
  kv_f32(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  kv_str("tokenizer.ggml.model", "gpt2");
  kv_str("tokenizer.ggml.pre", arch == "qwen2" ? "qwen2" : "default");
  key("tokenizer.ggml.tokens", kArray);
  kv.U32(kString);
  kv.U64(static_cast<uint64_t>(c.vocab_size));
  for (int64_t i = 0; i < c.vocab_size; ++i) kv.Str("t" + std::to_string(i));
  key("tokenizer.ggml.token_type", kArray);
  kv.U32(kI32);
  kv.U64(static_cast<uint64_t>(c.vocab_size));
  for (int64_t i = 0; i < c.vocab_size; ++i) kv.U32(1);  // normal
  key("tokenizer.ggml.merges", kArray);
  kv.U32(kString);
  kv.U64(0);
  kv_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(c.bos_token_id >= 0 ? c.bos_token_id : 0));
  kv_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(c.eos_token_ids.empty() ? 0 : c.eos_token_ids[0]));

  w.Raw("GGUF", 4);
  w.U32(3);
  w.U64(tensors.size());
  w.U64(static_cast<uint64_t>(n_kv));
  w.Raw(kv.bytes.data(), kv.bytes.size());
  uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    w.Str(t.name);
    w.U32(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) w.U64(d);
    w.U32(t.type);
    w.U64(offset);
    offset += (t.data.size() + kAlignment - 1) / kAlignment * kAlignment;
  }
  w.Pad();
  std::ofstream out(out_path, std::ios::binary);
  out.write(w.bytes.data(), static_cast<std::streamsize>(w.bytes.size()));
  for (const Tensor& t : tensors) {
    out.write(t.data.data(), static_cast<std::streamsize>(t.data.size()));
    const std::string pad((kAlignment - t.data.size() % kAlignment) % kAlignment, '\0');
    out.write(pad.data(), static_cast<std::streamsize>(pad.size()));
  }
  if (!out) {
    std::fprintf(stderr, "make_gguf: cannot write %s\n", out_path.c_str());
    return 1;
  }
  std::printf("wrote %s: %zu tensors, matrices %s\n", out_path.c_str(), tensors.size(), format.c_str());
  return 0;
}

}  // namespace
}  // namespace ds

int main(int argc, char** argv) { return ds::Run(argc, argv); }
