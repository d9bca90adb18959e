// SPDX-License-Identifier: MIT
#include <array>

#include "handlers.hpp"

namespace qxa::guest::handlers {

namespace {
constexpr std::array entries = {
    handler_entry{pb::Envelope::kPing, "ping", &ping},
    handler_entry{pb::Envelope::kInfoRequest, "info", &info},
    handler_entry{pb::Envelope::kTelemetryRequest, "telemetry", &telemetry},
    handler_entry{pb::Envelope::kTimeRequest, "time", &time},
    handler_entry{pb::Envelope::kHostnameRequest, "hostname", &hostname},
};
}  // namespace

std::span<const handler_entry> table() { return entries; }

const handler_entry* find(pb::Envelope::BodyCase request) {
  for (const auto& e : entries) {
    if (e.request == request) return &e;
  }
  return nullptr;
}

pb::Envelope error_reply(pb::ErrorCode code, std::string message) {
  pb::Envelope e;
  e.mutable_error()->set_code(code);
  e.mutable_error()->set_message(std::move(message));
  return e;
}

}  // namespace qxa::guest::handlers
