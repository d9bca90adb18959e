// SPDX-License-Identifier: MIT
// Codec microbenchmark: encode and decode cost of small frames and 1 MiB frames.
// Usage: qxa_codec_bench [seconds-per-case]   (default 1)
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "qxa/common/envelope.hpp"

namespace qc = qxa::common;
namespace pb = quantix::agent::v1;
using clock_type = std::chrono::steady_clock;

namespace {

volatile std::size_t sink;  // keeps results observable to the optimiser

template <typename F>
double per_op_ns(double seconds, std::size_t batch, F&& op) {
  std::size_t ops = 0;
  const auto start = clock_type::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  auto now = start;
  do {
    for (std::size_t i = 0; i < batch; ++i) op();
    ops += batch;
    now = clock_type::now();
  } while (now < until);
  return std::chrono::duration<double, std::nano>(now - start).count() / static_cast<double>(ops);
}

pb::Envelope small_message() {
  pb::Envelope e;
  e.set_request_id(123456);
  e.set_session_id(0x0123456789ABCDEFULL);
  e.mutable_ping()->set_nonce(42);
  return e;
}

pb::Envelope large_message() {
  pb::Envelope e;
  e.set_request_id(1);
  e.mutable_error()->set_message(std::string(1u << 20, 'x'));
  return e;
}

void run_case(const char* name, const pb::Envelope& message, double seconds, std::size_t batch) {
  const auto frame = qc::encode_envelope(message).value();
  const double encode_ns =
      per_op_ns(seconds, batch, [&] { sink = qc::encode_envelope(message).value().size(); });

  // Decode a buffer of many frames at once, as a reader does with a full read buffer.
  const std::size_t copies = std::max<std::size_t>(1, (256u << 10) / frame.size());
  std::vector<std::uint8_t> stream;
  for (std::size_t i = 0; i < copies; ++i) stream.insert(stream.end(), frame.begin(), frame.end());
  qc::frame_decoder decoder;
  pb::Envelope out;
  const double decode_batch_ns = per_op_ns(seconds, 1, [&] {
    decoder.feed(stream);
    for (auto r = decoder.next(); r.status == qc::decode_status::frame; r = decoder.next()) {
      qc::decode_envelope(r.payload, out);
    }
    sink = out.request_id();
  });
  const double decode_ns = decode_batch_ns / static_cast<double>(copies);
  const double mb = static_cast<double>(frame.size()) / 1e6;
  fmt::print(
      "{:<18} {:>9} B  encode {:>10.1f} ns  {:>8.1f} MB/s   decode {:>10.1f} ns  {:>8.1f} MB/s\n",
      name, frame.size(), encode_ns, mb / (encode_ns * 1e-9), decode_ns, mb / (decode_ns * 1e-9));
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  if (!(seconds > 0)) {
    fmt::print(stderr, "usage: {} [seconds-per-case]\n", argv[0]);
    return 2;
  }
  fmt::print(
      "frame codec, {:.1f} s per case (encode = serialize + header + CRC-32;"
      " decode = scan + CRC-32 + parse)\n",
      seconds);
  run_case("small (ping)", small_message(), seconds, 1000);
  run_case("1 MiB payload", large_message(), seconds, 1);
  return 0;
}
