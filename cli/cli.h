// The `ds` command: shared pieces of its subcommands. Written against ds_c.h only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ds_c.h"

namespace ds_cli {

// Flags every model-running subcommand understands.
struct CommonOptions {
  std::string model_dir;
  ds_backend backend = DS_BACKEND_CPU;
  int threads = 0;
  int device = 0;  // CUDA device ordinal
  uint32_t n_ctx = 4096;
  float temperature = -1;  // < 0: the model's generation_config.json, else greedy
  int top_k = 0;
  float top_p = -1;
  float min_p = 0;
  uint64_t seed = 0;
  int max_tokens = 512;
  bool raw = false;              // no chat template
  std::string system;
  bool hide_reasoning = false;
  bool show_special = false;
  bool quiet = false;            // no progress bar or statistics
  int32_t weight_format = DS_WEIGHTS_F32;  // a ds_weight_format
  int32_t compute = DS_COMPUTE_AUTO;
  std::string speculative;       // "", ngram, mtp, draft
  std::string draft_model;       // for draft
  int draft_tokens = 4;
  bool adaptive = false;
};

// Parses argv[first..] into options; unknown flags go to `rest`. Returns false (after printing
// the reason) on a malformed flag.
bool ParseCommon(int argc, char** argv, int first, CommonOptions& options, std::vector<std::string>& rest);
// The help text of the common flags.
const char* CommonHelp();

// Opens the engine with a progress bar on stderr; prints the error and returns null on failure.
ds_engine* OpenEngine(const CommonOptions& options);
// Session options from the flags and the model folder's generation_config.json; opens the draft
// model for --speculative draft (false after printing why, if that fails).
bool SessionOptions(const CommonOptions& options, ds_session_options& out);
// A session with the flags' options; null after printing why not.
ds_session* NewSession(ds_engine* engine, const CommonOptions& options);
// Prints the speculative decoding counters of a session (if it speculates).
void PrintSpeculativeStats(ds_session* session);
// Prints "ds: <what>: <status>: <message>" and returns 1.
int Fail(const char* what, ds_status status);

int RunCommand(int argc, char** argv);
int ChatCommand(int argc, char** argv);
int InfoCommand(int argc, char** argv);
int BenchCommand(int argc, char** argv);
int MakeModelCommand(int argc, char** argv);

}  // namespace ds_cli
