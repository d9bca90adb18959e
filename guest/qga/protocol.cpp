// SPDX-License-Identifier: MIT
// The qemu-guest-agent wire without I/O: cutting the stream into commands, reading a command,
// checking its arguments, writing an answer (see qga.hpp).
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

#include "qxa/common/log.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qxa::guest::qga {

namespace {

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// What nlohmann says, without its "[json.exception.parse_error.101] " prefix.
std::string parse_error_text(const std::exception& e) {
  std::string_view what = e.what();
  if (what.starts_with("[json.exception.")) {
    if (const auto end = what.find("] "); end != std::string_view::npos)
      what.remove_prefix(end + 2);
  }
  return "JSON parse error, " + std::string(what);
}

}  // namespace

void splitter::reset() {
  buffer_.clear();
  depth_ = 0;
  values_ = 0;
  in_string_ = escaped_ = in_token_ = too_big_ = too_deep_ = too_many_ = false;
}

void splitter::finish(std::vector<piece>& out) {
  if (too_big_) {
    out.push_back({piece::kind::error, "JSON parse error, the command is longer than " +
                                           std::to_string(max_bytes_) + " bytes"});
  } else if (too_deep_) {
    out.push_back({piece::kind::error, "JSON parse error, the command nests deeper than " +
                                           std::to_string(max_depth_) + " levels"});
  } else if (too_many_) {
    out.push_back({piece::kind::error, "JSON parse error, the command holds more than " +
                                           std::to_string(max_values_) + " values"});
  } else {
    out.push_back({piece::kind::text, std::move(buffer_)});
  }
  reset();
}

void splitter::feed(std::string_view bytes, std::vector<piece>& out) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (static_cast<unsigned char>(c) == 0xFF) {
      // Never valid in JSON: the client's way to drop what it sent so far.
      reset();
      ++resets_;
      continue;
    }
    if (in_token_) {
      // A bare word or number at the top level ends where a delimiter starts.
      if (json_space(c) || c == '{' || c == '[' || c == '}' || c == ']' || c == '"') {
        finish(out);
      } else {
        if (!too_big_ && !too_many_) buffer_ += c;
        if (buffer_.size() > max_bytes_) {
          too_big_ = true;
          buffer_.clear();
        }
        continue;
      }
    }
    if (depth_ == 0 && !in_string_) {
      if (json_space(c)) continue;
      if (c == '}' || c == ']') {
        out.push_back({piece::kind::error, "JSON parse error, expecting value"});
        continue;
      }
      buffer_.assign(1, c);
      if (c == '{' || c == '[') {
        depth_ = 1;
      } else if (c == '"') {
        in_string_ = true;
      } else {
        in_token_ = true;
      }
      continue;
    }
    if (!too_big_ && !too_many_) buffer_ += c;
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
        if (depth_ == 0) finish(out);  // a string alone at the top level
      }
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      if (++depth_ > max_depth_) too_deep_ = true;
      ++values_;
    } else if (c == '}' || c == ']') {
      if (--depth_ == 0) finish(out);
    } else if (c == ',') {
      ++values_;
    }
    if (values_ > max_values_ && !too_many_) {
      // Each value costs the parser tens of bytes whatever its size in the text ("[]," is three
      // bytes): a command of many small values is refused, not parsed, keeping a command's
      // memory within a small multiple of its size.
      too_many_ = true;  // followed to its end without keeping it, as an oversized one
      buffer_.clear();
      buffer_.shrink_to_fit();
    }
    if (buffer_.size() > max_bytes_) {
      // Followed to its end without keeping it: memory stays bounded, and the stream stays in
      // step for the commands after it.
      too_big_ = true;
      buffer_.clear();
      buffer_.shrink_to_fit();
    }
  }
}

std::variant<command_call, answer> parse_command(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return answer::generic(parse_error_text(e));
  }
  if (!j.is_object()) return answer::generic("QMP input must be a JSON object");
  command_call call;
  if (auto id = j.find("id"); id != j.end()) {
    call.id = *id;
    call.has_id = true;
  }
  bool has_execute = false;
  for (const auto& [key, value] : j.items()) {
    if (key == "execute") {
      if (!value.is_string()) return answer::generic("QMP input member 'execute' must be a string");
      call.name = value.get<std::string>();
      has_execute = true;
    } else if (key == "arguments") {
      if (!value.is_object()) {
        return answer::generic("QMP input member 'arguments' must be an object");
      }
      call.arguments = value;
    } else if (key != "id") {
      return answer::generic("QMP input member '" + key + "' is unexpected");
    }
  }
  if (!has_execute) return answer::generic("QMP input lacks member 'execute'");
  return call;
}

std::string format_answer(const answer& a, const command_call* call, bool delimited) {
  if (a.silent) return {};
  json o = json::object();
  if (a.failed()) {
    o["error"] = {{"class", a.error_class}, {"desc", a.desc}};
  } else {
    o["return"] = a.value;
  }
  if (call != nullptr && call->has_id) o["id"] = call->id;
  // A name from the guest (a file, a user) need not be UTF-8: replaced, never a failed answer.
  std::string line = o.dump(-1, ' ', false, json::error_handler_t::replace);
  line += '\n';
  if (delimited) line.insert(line.begin(), '\xff');
  return line;
}

std::optional<answer> check_arguments(const json& arguments, std::span<const parameter> params) {
  using enum parameter::type;
  const auto invalid = [](const std::string& name, const char* expected) {
    return answer::generic("Invalid parameter type for '" + name + "', expected: " + expected);
  };
  for (const auto& p : params) {
    const auto it = arguments.find(p.name);
    if (it == arguments.end()) {
      if (p.required) return answer::generic(std::string("Parameter '") + p.name + "' is missing");
      continue;
    }
    const json& v = *it;
    switch (p.kind) {
      case integer:
        if (!v.is_number_integer()) return invalid(p.name, "integer");
        break;
      case number:
        if (!v.is_number()) return invalid(p.name, "number");
        break;
      case string:
        if (!v.is_string()) return invalid(p.name, "string");
        break;
      case boolean:
        if (!v.is_boolean()) return invalid(p.name, "boolean");
        break;
      case string_list:
      case object_list:
        if (!v.is_array()) return invalid(p.name, "array");
        for (std::size_t i = 0; i < v.size(); ++i) {
          const bool fits = p.kind == string_list ? v[i].is_string() : v[i].is_object();
          if (!fits) {
            return invalid(std::string(p.name) + "[" + std::to_string(i) + "]",
                           p.kind == string_list ? "string" : "object");
          }
        }
        break;
      case any:
        break;
    }
  }
  for (const auto& item : arguments.items()) {
    const std::string& key = item.key();
    const bool declared = std::any_of(params.begin(), params.end(),
                                      [&](const parameter& p) { return key == p.name; });
    if (!declared) return answer::generic("Parameter '" + key + "' is unexpected");
  }
  return std::nullopt;
}

std::string to_base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = ::EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(bytes.data()),
                                  static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> from_base64(std::string_view text) {
  std::string clean;
  clean.reserve(text.size());
  for (char c : text) {
    if (!json_space(c)) clean += c;
  }
  if (clean.size() % 4 != 0) return std::nullopt;
  if (clean.empty()) return std::string();
  // Padding, one or two '=', only at the end.
  const auto pad = std::min(clean.find('='), clean.size());
  if (clean.size() - pad > 2 || clean.find_first_not_of('=', pad) != std::string::npos) {
    return std::nullopt;
  }
  for (std::size_t i = 0; i < pad; ++i) {
    const auto c = static_cast<unsigned char>(clean[i]);
    if (!std::isalnum(c) && c != '+' && c != '/') return std::nullopt;
  }
  std::string out(clean.size() / 4 * 3, '\0');
  const int n = ::EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(clean.data()),
                                  static_cast<int>(clean.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  std::size_t size = static_cast<std::size_t>(n);
  if (clean.ends_with("==")) {
    size -= 2;
  } else if (clean.ends_with('=')) {
    size -= 1;
  }
  out.resize(size);
  return out;
}

bool automatic_mode_serves(const std::string& root) {
  for (const char* binary : {"usr/bin/qemu-ga", "usr/sbin/qemu-ga"}) {
    const std::string path = (root.ends_with('/') ? root : root + "/") + binary;
    if (::access(path.c_str(), F_OK) == 0) {
      common::log_info(
          "qemu-ga port: not served, since {} is installed (set [qemu_ga] enabled = true to "
          "serve it instead)",
          path);
      return false;
    }
  }
  return true;
}

}  // namespace qxa::guest::qga
