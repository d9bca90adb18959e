// SPDX-License-Identifier: MIT
// The qemu-guest-agent wire without I/O: the splitter, reading commands, checking arguments,
// writing answers, base64. The messages are qemu-ga's own (measured against qemu-ga 7.2).
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "qxa/guest/core/config.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qga = qxa::guest::qga;
using piece = qga::splitter::piece;

namespace {

std::vector<piece> split_all(const std::string& bytes, std::size_t step,
                             qga::splitter s = qga::splitter{}) {
  std::vector<piece> out;
  for (std::size_t i = 0; i < bytes.size(); i += step) {
    s.feed(std::string_view(bytes).substr(i, step), out);
  }
  return out;
}

std::vector<std::string> texts(const std::vector<piece>& pieces) {
  std::vector<std::string> t;
  for (const auto& p : pieces)
    t.push_back((p.type == piece::kind::error ? "error: " : "") + p.text);
  return t;
}

std::string error_of(const std::string& text) {
  auto parsed = qga::parse_command(text);
  REQUIRE(std::holds_alternative<qga::answer>(parsed));
  return std::get<qga::answer>(parsed).desc;
}

}  // namespace

TEST_CASE("the splitter cuts commands the same way whatever pieces the bytes come in", "[guest]") {
  const std::string stream =
      "{\"execute\":\"guest-ping\"}\n"
      "  {\"execute\": \"guest-sync\",\n \"arguments\": {\"id\": 7}}"
      "{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/sh\",\"arg\":[\"-c\",\"echo "
      "'}{]' \\\"x\\\\\\\"\"]}}\n";
  const auto whole = texts(split_all(stream, stream.size()));
  REQUIRE(whole.size() == 3);
  CHECK(whole[0] == "{\"execute\":\"guest-ping\"}");
  CHECK(whole[1] == "{\"execute\": \"guest-sync\",\n \"arguments\": {\"id\": 7}}");
  CHECK(whole[2].ends_with("\"]}}"));
  for (std::size_t step : {1u, 2u, 3u, 7u, 64u}) {
    INFO("pieces of " << step << " bytes");
    CHECK(texts(split_all(stream, step)) == whole);
  }
}

TEST_CASE("0xFF drops a partial command and nothing else", "[guest]") {
  qga::splitter s;
  std::vector<piece> out;
  s.feed("{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/rm", out);
  CHECK(out.empty());
  CHECK(s.pending() > 0);
  s.feed("\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":3}}", out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].text == "{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":3}}");
  CHECK(s.resets() == 1);
  CHECK(s.pending() == 0);
  // Inside a string too: a client resets whatever state the agent's parser is in.
  out.clear();
  s.feed("{\"execute\":\"gu\xff{\"execute\":\"guest-ping\"}", out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].text == "{\"execute\":\"guest-ping\"}");
}

TEST_CASE("what is not an object at the top level is cut as qemu-ga cuts it", "[guest]") {
  const auto got = texts(split_all("garbage {\"a\":1} 42\n\"str\" ]}[1]", 1));
  CHECK(got == std::vector<std::string>{"garbage", "{\"a\":1}", "42", "\"str\"",
                                        "error: JSON parse error, expecting value",
                                        "error: JSON parse error, expecting value", "[1]"});
}

TEST_CASE("an oversized or too deep command is skipped to its end and the next one is read",
          "[guest]") {
  qga::splitter s(1024, 8);
  std::vector<piece> out;
  std::string big = "{\"execute\":\"guest-file-write\",\"arguments\":{\"buf-b64\":\"";
  big += std::string(100'000, 'A') + "}{]}}";  // braces inside the string do not count
  big += "\"}}";
  s.feed(big, out);
  CHECK(s.pending() == 0);  // nothing of it was kept
  s.feed(std::string(20, '[') + std::string(20, ']') + "{\"execute\":\"guest-ping\"}", out);
  REQUIRE(out.size() == 3);
  CHECK(out[0].type == piece::kind::error);
  CHECK(out[0].text == "JSON parse error, the command is longer than 1024 bytes");
  CHECK(out[1].type == piece::kind::error);
  CHECK(out[1].text == "JSON parse error, the command nests deeper than 8 levels");
  CHECK(out[2].text == "{\"execute\":\"guest-ping\"}");
}

TEST_CASE("a command is read with qemu-ga's checks and messages", "[guest]") {
  CHECK(error_of("[1]") == "QMP input must be a JSON object");
  CHECK(error_of("42") == "QMP input must be a JSON object");
  CHECK(error_of("{\"foo\":1}") == "QMP input member 'foo' is unexpected");
  CHECK(error_of("{\"execute\":5}") == "QMP input member 'execute' must be a string");
  CHECK(error_of("{\"execute\":\"guest-ping\",\"arguments\":[]}") ==
        "QMP input member 'arguments' must be an object");
  CHECK(error_of("{\"execute\":\"guest-ping\",\"arguments\":null}") ==
        "QMP input member 'arguments' must be an object");
  CHECK(error_of("{\"arguments\":{}}") == "QMP input lacks member 'execute'");
  CHECK(error_of("garbage").starts_with("JSON parse error, "));
  // A string that is not UTF-8 is no JSON: never a name the agent would pass on.
  CHECK(error_of("{\"execute\":\"guest-\xc3\x28\"}").starts_with("JSON parse error, "));

  auto parsed = qga::parse_command(R"({"execute":"guest-sync","arguments":{"id":9},"id":"x1"})");
  REQUIRE(std::holds_alternative<qga::command_call>(parsed));
  const auto& call = std::get<qga::command_call>(parsed);
  CHECK(call.name == "guest-sync");
  CHECK(call.arguments["id"] == 9);
  CHECK(call.has_id);
  CHECK(qga::format_answer(qga::answer::ok(9), &call) == "{\"return\":9,\"id\":\"x1\"}\n");
  CHECK(qga::format_answer(qga::answer::ok(9), &call, /*delimited=*/true) ==
        "\xff{\"return\":9,\"id\":\"x1\"}\n");
  CHECK(qga::format_answer(qga::answer::not_found("The command x has not been found"), nullptr) ==
        "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command x has not been "
        "found\"}}\n");
  qga::answer silent;
  silent.silent = true;
  CHECK(qga::format_answer(silent, &call).empty());
  // A guest's name that is not UTF-8 is replaced in the answer, never a failed answer.
  CHECK(qga::format_answer(qga::answer::ok("user\xff"), nullptr) ==
        "{\"return\":\"user\xef\xbf\xbd\"}\n");
}

TEST_CASE("arguments are checked against the QAPI parameters with qemu-ga's messages", "[guest]") {
  using t = qga::parameter::type;
  const qga::parameter params[] = {{"path", t::string, true},
                                   {"arg", t::string_list, false},
                                   {"count", t::integer, false},
                                   {"flag", t::boolean, false}};
  const auto error = [&](const char* json_text) {
    auto a = qga::check_arguments(qga::json::parse(json_text), params);
    return a ? a->error_class + ": " + a->desc : std::string("ok");
  };
  CHECK(error(R"({"path":"/bin/true"})") == "ok");
  CHECK(error(R"({"path":"/bin/true","arg":["a","b"],"count":3,"flag":false})") == "ok");
  CHECK(error(R"({})") == "GenericError: Parameter 'path' is missing");
  CHECK(error(R"({"path":1})") ==
        "GenericError: Invalid parameter type for 'path', expected: string");
  CHECK(error(R"({"path":"x","count":1.5})") ==
        "GenericError: Invalid parameter type for 'count', expected: integer");
  CHECK(error(R"({"path":"x","arg":"a"})") ==
        "GenericError: Invalid parameter type for 'arg', expected: array");
  CHECK(error(R"({"path":"x","arg":["a",2]})") ==
        "GenericError: Invalid parameter type for 'arg[1]', expected: string");
  CHECK(error(R"({"path":"x","flag":"yes"})") ==
        "GenericError: Invalid parameter type for 'flag', expected: boolean");
  CHECK(error(R"({"path":"x","other":1})") == "GenericError: Parameter 'other' is unexpected");
}

TEST_CASE("base64 as QAPI carries bytes", "[guest]") {
  for (std::string bytes : {std::string(), std::string("a"), std::string("ab"), std::string("abc"),
                            std::string("\x00\xff\x10\x80", 4)}) {
    const auto text = qga::to_base64(bytes);
    CHECK(text.size() % 4 == 0);
    CHECK(qga::from_base64(text) == bytes);
  }
  CHECK(qga::to_base64("hello") == "aGVsbG8=");
  CHECK(qga::from_base64("aGVs\nbG8=") == std::string("hello"));
  CHECK_FALSE(qga::from_base64("aGVsbG8"));   // not a multiple of 4
  CHECK_FALSE(qga::from_base64("aGV*bG8="));  // not the alphabet
  CHECK_FALSE(qga::from_base64("a=Vs"));      // padding inside
  CHECK_FALSE(qga::from_base64("a==="));
}

TEST_CASE("[qemu_ga] in agent.toml sets the mode, the port and the command limit", "[guest]") {
  qxa::guest::agent_config c;
  CHECK(c.agent.qemu_ga.enabled == qxa::guest::qemu_ga_options::mode::automatic);
  CHECK(c.agent.qemu_ga.port.path == "/dev/virtio-ports/org.qemu.guest_agent.0");
  REQUIRE_FALSE(qxa::guest::apply_agent_config(
      "[qemu_ga]\nmode = \"on\"\nport = \"unix-listen:/run/qga.sock\"\nmax_command_bytes = 65536\n",
      "agent.toml", c));
  CHECK(c.agent.qemu_ga.enabled == qxa::guest::qemu_ga_options::mode::on);
  CHECK(c.agent.qemu_ga.port.to_string() == "unix-listen:/run/qga.sock");
  CHECK(c.agent.qemu_ga.max_command_bytes == 65536);
  auto err = qxa::guest::apply_agent_config("[qemu_ga]\nmode = \"maybe\"\n", "agent.toml", c);
  REQUIRE(err);
  CHECK(err->message.find("qemu_ga.mode") != std::string::npos);
}

TEST_CASE("auto mode leaves the port to an installed qemu-guest-agent", "[guest]") {
  char tmpl[] = "/tmp/qxa-qga-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string root = tmpl;
  CHECK(qga::automatic_mode_serves(root));
  std::filesystem::create_directories(root + "/usr/sbin");
  std::ofstream(root + "/usr/sbin/qemu-ga") << "";
  CHECK_FALSE(qga::automatic_mode_serves(root));
  std::filesystem::remove_all(root);
}

TEST_CASE("a command of more values than the limit is skipped to its end, kept nowhere",
          "[guest][hostile]") {
  qga::splitter s(1u << 20, 32, 100);
  std::vector<piece> out;
  std::string many = R"({"execute":"guest-ping","arguments":{"x":[)";
  for (int i = 0; i < 1000; ++i) many += "[],";
  many += R"("a,b[{",[]]}})";  // what is in a string does not count
  s.feed(many, out);
  CHECK(s.pending() == 0);
  std::string fine = R"({"execute":"guest-sync","arguments":{"id":1,"x":[)";
  for (int i = 0; i < 90; ++i) fine += "1,";
  fine += "1]}}";
  s.feed(fine, out);
  REQUIRE(out.size() == 2);
  CHECK(out[0].type == piece::kind::error);
  CHECK(out[0].text == "JSON parse error, the command holds more than 100 values");
  CHECK(out[1].type == piece::kind::text);
  CHECK(out[1].text == fine);
}
