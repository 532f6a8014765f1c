#include "core/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/model/text_file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace ds {
namespace {

std::string TokenContent(const nlohmann::json& v, const std::string& fallback) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return fallback;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Load(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer_config.json").string();
  auto text = ReadTextFile(path);
  if (!text.ok()) return ChatTemplate(Style::kDeepseekV3);
  const auto config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return FormatError(absl::StrCat(path, ": not a JSON object"));
  const std::string jinja = config.contains("chat_template") && config["chat_template"].is_string()
                                ? config["chat_template"].get<std::string>()
                                : "";
  if (!jinja.empty() && jinja.find("<｜User｜>") == std::string::npos)
    return absl::UnimplementedError(absl::StrCat(path, ": the chat_template is not a DeepSeek format (no <｜User｜>)"));
  // R1's template opens the answer with <think> and drops earlier reasoning at </think>.
  const Style style = jinja.find("</think>") != std::string::npos ? Style::kDeepseekR1 : Style::kDeepseekV3;
  return ChatTemplate(style, TokenContent(config.value("bos_token", nlohmann::json()), "<｜begin▁of▁sentence｜>"),
                      TokenContent(config.value("eos_token", nlohmann::json()), "<｜end▁of▁sentence｜>"));
}

absl::StatusOr<std::string> ChatTemplate::Apply(const std::vector<ChatMessage>& messages,
                                                bool add_generation_prompt) const {
  // System prompts, joined by a blank line, come first whatever their place.
  std::string system;
  bool first_system = true;
  for (const auto& m : messages) {
    if (m.role != "system") continue;
    if (!first_system) system += "\n\n";
    system += m.content;
    first_system = false;
  }
  std::string out = bos_ + system;
  bool in_tool_outputs = false, first_output = true;
  for (const auto& m : messages) {
    if (m.role == "system") continue;
    if (m.role == "user") {
      in_tool_outputs = false;
      out += "<｜User｜>" + m.content;
    } else if (m.role == "assistant") {
      std::string content = m.content;
      if (style_ == Style::kDeepseekR1) {
        const size_t end_think = content.rfind("</think>");
        if (end_think != std::string::npos) content = content.substr(end_think + 8);
      }
      out += (in_tool_outputs ? "<｜tool▁outputs▁end｜>" : "<｜Assistant｜>") + content + eos_;
      in_tool_outputs = false;
    } else if (m.role == "tool") {
      out += first_output ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" : "\n<｜tool▁output▁begin｜>";
      out += m.content + "<｜tool▁output▁end｜>";
      in_tool_outputs = true;
      first_output = false;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown chat role '", m.role, "' (system, user, assistant, tool)"));
    }
  }
  if (in_tool_outputs) out += "<｜tool▁outputs▁end｜>";
  if (add_generation_prompt && !in_tool_outputs) {
    out += "<｜Assistant｜>";
    if (style_ == Style::kDeepseekR1) out += "<think>\n";
  }
  return out;
}

}  // namespace ds
