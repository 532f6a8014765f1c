// The chat template on arbitrary messages (roles valid and not, any content): an error for an
// unknown role, otherwise text holding every user and system message, in both styles.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tokenizer/chat_template.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* kRoles[] = {"system", "user", "assistant", "tool", "narrator"};
  std::vector<ds::ChatMessage> messages;
  size_t i = 0;
  while (i < size) {
    const uint8_t head = data[i++];
    const size_t length = std::min<size_t>(head >> 3, size - i);
    messages.push_back({kRoles[head % 5], std::string(reinterpret_cast<const char*>(data + i), length)});
    i += length;
  }
  for (auto style : {ds::ChatTemplate::Style::kDeepseekV3, ds::ChatTemplate::Style::kDeepseekR1}) {
    const ds::ChatTemplate chat(style);
    auto text = chat.Apply(messages, (size & 1) != 0);
    bool unknown_role = false;
    for (const auto& m : messages) unknown_role |= m.role == "narrator";
    FUZZ_CHECK(text.ok() != unknown_role);
    if (!text.ok()) continue;
    for (const auto& m : messages)
      if (m.role == "user" || m.role == "system") FUZZ_CHECK(text->find(m.content) != std::string::npos);
  }
  return 0;
}
