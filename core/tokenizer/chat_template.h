// The chat formats of the DeepSeek-V3/R1 family, written in C++ rather than interpreted from
// the Jinja in tokenizer_config.json: the template text only tells which variant applies.
//   V3: <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜>{answer}<｜end▁of▁sentence｜>...
//   R1 (and its distills): the same, with the reasoning of earlier answers removed and the
//       generation prompt opening a new one: <｜Assistant｜><think>\n
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ds {

struct ChatMessage {
  std::string role;  // system, user, assistant, tool
  std::string content;
};

class ChatTemplate {
 public:
  enum class Style { kDeepseekV3, kDeepseekR1 };

  // From <model_dir>/tokenizer_config.json's chat_template; the V3 style when there is none.
  static absl::StatusOr<ChatTemplate> Load(const std::string& model_dir);
  explicit ChatTemplate(Style style, std::string bos = "<｜begin▁of▁sentence｜>",
                        std::string eos = "<｜end▁of▁sentence｜>")
      : style_(style), bos_(std::move(bos)), eos_(std::move(eos)) {}

  absl::StatusOr<std::string> Apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  Style style() const { return style_; }

 private:
  Style style_;
  std::string bos_, eos_;
};

}  // namespace ds
