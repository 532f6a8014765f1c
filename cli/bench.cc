// ds info and ds bench.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cli/cli.h"

namespace ds_cli {

int InfoCommand(int argc, char** argv) {
  CommonOptions o;
  std::vector<std::string> rest;
  if (!ParseCommon(argc, argv, 2, o, rest)) return 2;
  if (!rest.empty()) {
    std::printf("usage: ds info -m MODEL_DIR\n");
    return rest[0] == "--help" || rest[0] == "-h" ? 0 : 2;
  }
  ds_engine* engine = OpenEngine(o);
  if (!engine) return 1;
  ds_model_info info;
  info.struct_size = sizeof info;
  if (ds_status s = ds_engine_info(engine, &info); s != DS_OK) return Fail("info", s);
  std::printf("model             %s\n", o.model_dir.c_str());
  std::printf("architecture      %s\n", info.model_type);
  std::printf("layers            %u (+%u MTP)\n", info.n_layers, info.n_mtp_layers);
  std::printf("hidden size       %u\n", info.hidden_size);
  std::printf("vocabulary        %u\n", info.n_vocab);
  std::printf("max positions     %u\n", info.max_position_embeddings);
  std::printf("parameters        %.3f B\n", info.n_parameters / 1e9);
  std::printf("weight memory     %.2f GiB on %s\n", info.weight_bytes / 1073741824.0, info.backend);
  std::printf("KV cache          %.1f KiB per token, %.2f GiB at 4096 tokens\n", info.kv_bytes_per_token / 1024.0,
              info.kv_bytes_per_token * 4096.0 / 1073741824.0);
  std::printf("tokenizer         %s (BOS %d, EOS %d)\n", info.has_tokenizer ? "tokenizer.json" : "none",
              info.bos_token_id, info.eos_token_id);
  ds_engine_close(engine);
  return 0;
}

int BenchCommand(int argc, char** argv) {
  CommonOptions o;
  std::vector<std::string> rest;
  if (!ParseCommon(argc, argv, 2, o, rest)) return 2;
  std::vector<int> prompt_lengths = {512};
  int n_gen = 64, repetitions = 3;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == "-p" && i + 1 < rest.size()) {
      prompt_lengths.clear();
      for (const char* p = rest[++i].c_str(); *p; ++p) {  // "512,4096"
        prompt_lengths.push_back(std::max(1, std::atoi(p)));
        while (p[1] && *p != ',') ++p;
      }
    } else if (rest[i] == "-g" && i + 1 < rest.size()) {
      n_gen = std::stoi(rest[++i]);
    } else if (rest[i] == "-r" && i + 1 < rest.size()) {
      repetitions = std::max(1, std::stoi(rest[++i]));
    } else {
      std::printf("usage: ds bench -m MODEL_DIR [-p PROMPT_TOKENS[,PROMPT_TOKENS...] (512)] [-g GENERATED_TOKENS (64)] "
                  "[-r REPETITIONS (3)]\n"
                  "Prefill and decode of random token ids after each prompt length (one model load); medians over\n"
                  "the repetitions. Decode is greedy unless --temp (with --top-k, --top-p, --min-p) asks to sample.\n%s",
                  CommonHelp());
      return rest[i] == "--help" || rest[i] == "-h" ? 0 : 2;
    }
  }
  const auto load_start = std::chrono::steady_clock::now();
  ds_engine* engine = OpenEngine(o);
  if (!engine) return 1;
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  ds_model_info info;
  info.struct_size = sizeof info;
  ds_engine_info(engine, &info);
  ds_session_options so;
  if (!SessionOptions(o, so)) return 1;
  if (o.temperature < 0) so.temperature = 0;  // greedy unless --temp: the figures then do not depend on the seed
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double weight_gb = info.weight_bytes / 1e9;
  std::printf("%s (%s, %.2f GB of weights on %s, loaded in %.1f s)\n", o.model_dir.c_str(), info.model_type, weight_gb,
              info.backend, load_s);
  for (int n_prompt : prompt_lengths) {
    std::mt19937 rng(1);
    std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
    for (auto& id : prompt) id = static_cast<int32_t>(rng() % info.n_vocab);
    so.n_ctx = static_cast<uint32_t>(n_prompt + n_gen);
    std::vector<double> prefill, decode;
    for (int r = 0; r < repetitions; ++r) {
      ds_session* s = nullptr;
      if (ds_status st = ds_session_create(engine, &so, &s); st != DS_OK) return Fail("session", st);
      const auto t0 = std::chrono::steady_clock::now();
      if (ds_status st = ds_session_append(s, prompt.data(), prompt.size()); st != DS_OK) return Fail("prefill", st);
      const auto t1 = std::chrono::steady_clock::now();
      for (int i = 0; i < n_gen; ++i) {
        int32_t token;
        if (ds_status st = ds_session_next_token(s, &token); st != DS_OK) return Fail("decode", st);
      }
      const auto t2 = std::chrono::steady_clock::now();
      prefill.push_back(n_prompt / std::chrono::duration<double>(t1 - t0).count());
      decode.push_back(n_gen / std::chrono::duration<double>(t2 - t1).count());
      if (r + 1 == repetitions) PrintSpeculativeStats(s);
      ds_session_close(s);
    }
    std::printf("prefill  %5d tokens   %9.1f tok/s   (median of %d)\n", n_prompt, median(prefill), repetitions);
    std::printf("decode   %5d tokens   %9.1f tok/s   after %d tokens, ~%.1f GB/s of weights read\n", n_gen,
                median(decode), n_prompt, median(decode) * weight_gb);
  }
  ds_engine_close(engine);
  return 0;
}

}  // namespace ds_cli
