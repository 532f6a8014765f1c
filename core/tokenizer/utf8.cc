#include "core/tokenizer/utf8.h"

namespace ds {

size_t Utf8Next(absl::string_view s, size_t i, uint32_t* cp) {
  const auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  const size_t n = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
  uint32_t c = b & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3f);
  *cp = c;
  return n;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

size_t FindInvalidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t min;
    if (b < 0x80) {
      ++i;
      continue;
    } else if ((b & 0xe0) == 0xc0) {
      n = 2, min = 0x80;
    } else if ((b & 0xf0) == 0xe0) {
      n = 3, min = 0x800;
    } else if ((b & 0xf8) == 0xf0) {
      n = 4, min = 0x10000;
    } else {
      return i;
    }
    if (i + n > s.size()) return i;
    uint32_t cp = b & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;  // overlong, range, surrogate
    i += n;
  }
  return absl::string_view::npos;
}

size_t CompleteUtf8Prefix(const std::string& s) {
  // Look back at most 3 bytes for the start of the last sequence.
  size_t i = s.size();
  for (size_t back = 1; back <= 4 && back <= s.size(); ++back) {
    const auto b = static_cast<uint8_t>(s[s.size() - back]);
    if ((b & 0xc0) == 0x80) continue;  // a continuation byte
    const size_t need = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
    i = back >= need ? s.size() : s.size() - back;
    break;
  }
  return i;
}

size_t AppendValidUtf8(absl::string_view bytes, bool final, std::string& out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b = static_cast<uint8_t>(bytes[i]);
    size_t n = 0;
    uint32_t min = 0;
    if (b < 0x80) n = 1;
    else if ((b & 0xe0) == 0xc0) n = 2, min = 0x80;
    else if ((b & 0xf0) == 0xe0) n = 3, min = 0x800;
    else if ((b & 0xf8) == 0xf0) n = 4, min = 0x10000;
    bool valid = n > 0;
    size_t have = 1;
    uint32_t cp = n > 1 ? b & (0x7f >> n) : b;
    for (; valid && have < n && i + have < bytes.size(); ++have) {
      const auto c = static_cast<uint8_t>(bytes[i + have]);
      if ((c & 0xc0) != 0x80) valid = false;
      else cp = (cp << 6) | (c & 0x3f);
    }
    if (valid && have < n) {  // cut short by the end of the bytes
      if (!final) return i;
      valid = false;
    }
    if (valid && n > 1 && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) valid = false;
    if (valid) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return i;
}

}  // namespace ds
