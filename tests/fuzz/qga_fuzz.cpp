// SPDX-License-Identifier: MIT
// Fuzz target: the qemu-guest-agent wire (guest/qga/protocol.cpp).
//
// The input is a piece-size byte, then a byte stream as a hostile client may send it on the
// qemu-ga port. Properties checked:
// - fed whole or in pieces of the given size, the splitter returns the same pieces;
// - it never holds more than its limit of a command, and never returns a text over it;
// - every text is answered: as a command, or with an error; the argument check of every command
//   shape takes any arguments without failing;
// - every answer is one line of JSON (a newline only at its end), and says "return" or "error".
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/guest/qga/qga.hpp"

namespace qga = qxa::guest::qga;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

constexpr std::size_t max_bytes = 4096;
constexpr std::size_t max_depth = 8;

std::vector<qga::splitter::piece> split(std::string_view stream, std::size_t step) {
  qga::splitter s(max_bytes, max_depth);
  std::vector<qga::splitter::piece> out;
  for (std::size_t i = 0; i < stream.size(); i += step) {
    s.feed(stream.substr(i, step), out);
    check(s.pending() <= max_bytes + 1, "the splitter holds more than its limit");
  }
  return out;
}

void check_answer(const std::string& line) {
  check(!line.empty() && line.back() == '\n', "an answer is not a line");
  std::string_view body(line);
  if (body.front() == '\xff') body.remove_prefix(1);
  body.remove_suffix(1);
  check(body.find('\n') == std::string_view::npos, "an answer spans lines");
  const auto j = qga::json::parse(body, nullptr, /*allow_exceptions=*/false);
  check(j.is_object() && (j.contains("return") || j.contains("error")),
        "an answer is not a qemu-ga answer");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t step = data[0] == 0 ? 1 : data[0];
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto whole = split(stream, stream.size() + 1);
  const auto pieces = split(stream, step);
  check(whole.size() == pieces.size(), "the pieces depend on how the bytes came");
  for (std::size_t i = 0; i < whole.size(); ++i) {
    check(whole[i].type == pieces[i].type && whole[i].text == pieces[i].text,
          "the pieces depend on how the bytes came");
  }
  using t = qga::parameter::type;
  const qga::parameter shapes[] = {{"id", t::integer, true},
                                   {"path", t::string, false},
                                   {"arg", t::string_list, false},
                                   {"vcpus", t::object_list, false},
                                   {"capture-output", t::boolean, false},
                                   {"x", t::number, false},
                                   {"any", t::any, false}};
  for (const auto& p : whole) {
    if (p.type == qga::splitter::piece::kind::error) {
      check_answer(qga::format_answer(qga::answer::generic(p.text), nullptr));
      continue;
    }
    check(p.text.size() <= max_bytes, "a piece over the limit");
    auto parsed = qga::parse_command(p.text);
    if (auto* refused = std::get_if<qga::answer>(&parsed)) {
      check(refused->failed(), "a refusal that is no error");
      check_answer(qga::format_answer(*refused, nullptr));
      continue;
    }
    const auto& call = std::get<qga::command_call>(parsed);
    const auto checked = qga::check_arguments(call.arguments, shapes);
    check_answer(qga::format_answer(checked ? *checked : qga::answer::ok(call.arguments), &call,
                                    call.name == "guest-sync-delimited"));
  }
  return 0;
}
