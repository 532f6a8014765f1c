// ds run and ds chat: text in, streamed text out.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.h"

namespace ds_cli {
namespace {

const char* StopName(int32_t r) {
  switch (r) {
    case DS_STOP_EOS: return "end of sequence";
    case DS_STOP_MAX_TOKENS: return "max tokens";
    case DS_STOP_STOP_TOKEN: return "stop token";
    case DS_STOP_STOP_STRING: return "stop string";
    case DS_STOP_CALLBACK: return "stopped";
    case DS_STOP_CANCELLED: return "interrupted";
    case DS_STOP_CONTEXT_FULL: return "context full";
  }
  return "?";
}

struct Printer {
  bool hide_reasoning = false;
  bool color = false;
  bool in_reasoning = false;
  std::string answer;  // what the user sees as the answer (for the chat history)
};

int PrintPiece(void* user, const char* piece, size_t len, int32_t, uint32_t flags) {
  auto* p = static_cast<Printer*>(user);
  const bool reasoning = flags & DS_PIECE_REASONING;
  if (!reasoning) p->answer.append(piece, len);
  if (reasoning && p->hide_reasoning) return 0;
  if (p->color && reasoning != p->in_reasoning) std::fputs(reasoning ? "\033[2m" : "\033[0m", stdout);
  p->in_reasoning = reasoning;
  std::fwrite(piece, 1, len, stdout);
  std::fflush(stdout);
  return 0;
}

// The running session, for Ctrl-C: it cancels generation instead of killing the program.
std::atomic<ds_session*> active_session{nullptr};

void OnInterrupt(int) {
  if (ds_session* s = active_session.load()) {
    ds_session_cancel(s);
  } else {
    std::_Exit(130);
  }
}

void InstallInterruptHandler() {
  struct sigaction sa = {};
  sa.sa_handler = OnInterrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

// Formats messages with the model's chat template.
bool ChatText(ds_engine* engine, const std::vector<std::pair<std::string, std::string>>& messages, bool generation_prompt,
              std::string& out) {
  std::vector<ds_chat_message> m;
  for (const auto& [role, content] : messages) m.push_back({role.c_str(), content.c_str()});
  size_t len = 0;
  ds_status s = ds_chat_apply(engine, m.data(), m.size(), generation_prompt, nullptr, 0, &len);
  if (s != DS_ERR_BUFFER_TOO_SMALL && s != DS_OK) return Fail("chat template", s) == 0;
  out.assign(len, '\0');
  s = ds_chat_apply(engine, m.data(), m.size(), generation_prompt, out.data(), out.size(), &len);
  if (s != DS_OK) return Fail("chat template", s) == 0;
  return true;
}

// Generates from `text`, printing as it goes. Returns false on an error.
bool Answer(ds_session* session, const CommonOptions& o, const std::string& text, bool add_special, Printer& printer,
            ds_generate_result& result) {
  ds_generate_params p;
  ds_generate_params_init(&p);
  p.prompt_text = text.data();
  p.prompt_text_len = text.size();
  p.add_special = add_special;
  p.max_tokens = static_cast<uint32_t>(o.max_tokens);
  p.show_special = o.show_special;
  result.struct_size = sizeof result;
  active_session = session;
  const ds_status s = ds_session_generate(session, &p, PrintPiece, &printer, &result);
  active_session = nullptr;
  if (printer.color && printer.in_reasoning) std::fputs("\033[0m", stdout);
  printer.in_reasoning = false;
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (s != DS_OK) return Fail("generation failed", s) == 0;
  if (!o.quiet)
    std::fprintf(stderr, "[%u prompt tokens at %.1f tok/s, %u generated at %.1f tok/s, %s]\n", result.n_prompt_tokens,
                 result.prefill_tokens_per_second, result.n_generated_tokens, result.decode_tokens_per_second,
                 StopName(result.stop_reason));
  return true;
}

}  // namespace

int RunCommand(int argc, char** argv) {
  CommonOptions o;
  std::vector<std::string> rest;
  if (!ParseCommon(argc, argv, 2, o, rest)) return 2;
  std::string prompt;
  for (size_t i = 0; i < rest.size(); ++i) {
    if ((rest[i] == "-p" || rest[i] == "--prompt") && i + 1 < rest.size()) {
      prompt = rest[++i];
    } else if (rest[i] == "-h" || rest[i] == "--help") {
      std::printf("usage: ds run -m MODEL_DIR -p PROMPT [flags]\n  -p, --prompt TEXT      the prompt ('-' reads stdin)\n%s",
                  CommonHelp());
      return 0;
    } else {
      std::fprintf(stderr, "ds run: unknown argument '%s' (see ds run --help)\n", rest[i].c_str());
      return 2;
    }
  }
  if (prompt == "-") prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  if (prompt.empty()) {
    std::fprintf(stderr, "ds run: no prompt: give -p \"...\"\n");
    return 2;
  }
  ds_engine* engine = OpenEngine(o);
  if (!engine) return 1;
  ds_session* session = NewSession(engine, o);
  if (!session) return 1;
  std::string text = prompt;
  std::vector<std::pair<std::string, std::string>> messages;
  if (!o.system.empty()) messages.emplace_back("system", o.system);
  messages.emplace_back("user", prompt);
  if (!o.raw && !ChatText(engine, messages, true, text)) return 1;
  InstallInterruptHandler();
  Printer printer{.hide_reasoning = o.hide_reasoning, .color = isatty(fileno(stdout)) != 0};
  ds_generate_result result;
  const bool ok = Answer(session, o, text, /*add_special=*/o.raw, printer, result);
  if (ok && !o.quiet) PrintSpeculativeStats(session);
  ds_session_close(session);
  ds_engine_close(engine);
  return ok ? 0 : 1;
}

int ChatCommand(int argc, char** argv) {
  CommonOptions o;
  std::vector<std::string> rest;
  if (!ParseCommon(argc, argv, 2, o, rest)) return 2;
  for (const auto& a : rest) {
    if (a == "-h" || a == "--help") {
      std::printf("usage: ds chat -m MODEL_DIR [flags]\nType a message and Enter. /reset starts over, /exit or Ctrl-D "
                  "quits, Ctrl-C stops an answer.\n%s",
                  CommonHelp());
      return 0;
    }
    std::fprintf(stderr, "ds chat: unknown argument '%s' (see ds chat --help)\n", a.c_str());
    return 2;
  }
  ds_engine* engine = OpenEngine(o);
  if (!engine) return 1;
  ds_session* session = NewSession(engine, o);
  if (!session) return 1;
  ds_model_info info;
  info.struct_size = sizeof info;
  ds_engine_info(engine, &info);
  InstallInterruptHandler();
  const bool tty = isatty(fileno(stdin)) != 0;
  if (tty && !o.quiet) std::fprintf(stderr, "%s loaded. /reset starts over, /exit quits.\n", o.model_dir.c_str());

  // The conversation so far, and the chat text the session's cache already holds. Each turn
  // sends only what the template adds after it, so the history is never prefilled again.
  std::vector<std::pair<std::string, std::string>> messages;
  if (!o.system.empty()) messages.emplace_back("system", o.system);
  std::string held;
  std::string line;
  while (true) {
    if (tty) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line.empty()) continue;
    if (line == "/reset") {
      ds_session_reset(session);
      messages.resize(o.system.empty() ? 0 : 1);
      held.clear();
      if (tty) std::fprintf(stderr, "(new conversation)\n");
      continue;
    }
    messages.emplace_back("user", line);
    std::string full;
    if (!ChatText(engine, messages, true, full)) break;
    if (full.compare(0, held.size(), held) != 0) {  // the template rewrote history: start over
      ds_session_reset(session);
      held.clear();
    }
    Printer printer{.hide_reasoning = o.hide_reasoning, .color = isatty(fileno(stdout)) != 0};
    ds_generate_result result;
    if (!Answer(session, o, full.substr(held.size()), /*add_special=*/false, printer, result)) break;
    // Close the turn as the template does, so the cache matches the next turn's text.
    if (result.stop_reason != DS_STOP_EOS && info.eos_token_id >= 0) {
      const int32_t eos = info.eos_token_id;
      if (ds_session_append(session, &eos, 1) != DS_OK) {
        std::fprintf(stderr, "ds: the context is full: /reset to start over\n");
      }
    }
    messages.emplace_back("assistant", printer.answer);
    if (!ChatText(engine, messages, false, held)) break;
  }
  ds_session_close(session);
  ds_engine_close(engine);
  return 0;
}

}  // namespace ds_cli
