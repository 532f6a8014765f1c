// Tokenizer encode throughput on a few MB of mixed text (English prose, code, Chinese, numbers,
// emoji, chat markup), with the DeepSeek-V3 tokenizer.json from $DS_TOKENIZER_DIR or the fixtures.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "core/tokenizer/tokenizer.h"

namespace {

std::string TokenizerDir() {
  if (const char* dir = std::getenv("DS_TOKENIZER_DIR")) return dir;
  return DS_FIXTURES_DIR "/tokenizer";
}

std::string MixedText(size_t bytes) {
  static const char* kParagraphs[] = {
      "The quick brown fox jumps over the lazy dog. In 2024, DeepSeek released V3, a 671B-parameter "
      "mixture-of-experts model with 37B active parameters per token; R1 followed in January 2025.\n\n",
      "int main(int argc, char** argv) {\n  for (int i = 0; i < argc; ++i) printf(\"%s\\n\", argv[i]);\n  return 0;\n}\n",
      "深度求索发布了新的推理模型。它在数学、代码和推理任务上表现出色，并且以开放权重的方式发布。\n",
      "Prices: $1,299.99 (-15%) on 2025-01-20 at 09:30:00 UTC; ratio 3.14159:2.71828 🐋✨\n",
      "<｜User｜>Explain multi-head latent attention.<｜Assistant｜><think>\nLet me recall the KV cache...</think>\n",
      "Привет, как дела? ひらがなとカタカナ。 مرحبا بالعالم. नमस्ते दुनिया।\n",
  };
  std::string text;
  for (size_t i = 0; text.size() < bytes; ++i) text += kParagraphs[i % std::size(kParagraphs)];
  return text;
}

void BM_Encode(benchmark::State& state) {
  static const auto tokenizer = ds::Tokenizer::Load(TokenizerDir());
  if (!tokenizer.ok()) {
    state.SkipWithError(std::string(tokenizer.status().message()).c_str());
    return;
  }
  const std::string text = MixedText(static_cast<size_t>(state.range(0)));
  size_t n_tokens = 0;
  for (auto _ : state) {
    auto ids = (*tokenizer)->Encode(text, false);
    n_tokens = ids->size();
    benchmark::DoNotOptimize(ids);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(n_tokens * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Encode)->Arg(4 << 20)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
