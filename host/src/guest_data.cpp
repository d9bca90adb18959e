// SPDX-License-Identifier: MIT
#include "qxa/host/guest_data.hpp"

#include <fmt/format.h>

#include "qxa/common/text.hpp"

namespace qxa::host {
namespace {

// Counts what one message lost, for the caller's log line.
struct trim_report {
  explicit trim_report(const guest_data_limits& l) : limits(l) {}
  const guest_data_limits& limits;
  std::size_t names_cut = 0;
  std::string dropped;

  void name(std::string* s) {
    if (s->size() <= limits.max_name_bytes) return;
    s->resize(common::utf8_prefix(*s, limits.max_name_bytes).size());
    ++names_cut;
  }
  template <typename Repeated>
  void count(Repeated* items, std::size_t max, const char* what) {
    const auto n = static_cast<std::size_t>(items->size());
    if (n <= max) return;
    items->DeleteSubrange(static_cast<int>(max), static_cast<int>(n - max));
    dropped += fmt::format("{}{} {} over the limit of {}", dropped.empty() ? "" : "; ", n - max,
                           what, max);
  }
  std::string text() const {
    if (names_cut == 0) return dropped;
    return fmt::format("{}{}{} names cut to {} bytes", dropped, dropped.empty() ? "" : "; ",
                       names_cut, limits.max_name_bytes);
  }
};

void cap_os(pb::OsInfo* os, trim_report& r) {
  for (auto* s :
       {os->mutable_name(), os->mutable_version(), os->mutable_id(), os->mutable_pretty_name(),
        os->mutable_kernel_release(), os->mutable_kernel_version(), os->mutable_architecture()}) {
    r.name(s);
  }
}

void cap_capabilities(google::protobuf::RepeatedPtrField<std::string>* caps, trim_report& r) {
  r.count(caps, r.limits.max_capabilities, "capabilities");
  for (auto& c : *caps) r.name(&c);
}

void cap_telemetry(pb::Telemetry& t, trim_report& r) {
  r.name(t.mutable_hostname());
  r.count(t.mutable_disks(), r.limits.max_disks, "disks");
  for (auto& d : *t.mutable_disks()) {
    r.name(d.mutable_mount_point());
    r.name(d.mutable_device());
    r.name(d.mutable_fs_type());
  }
  r.count(t.mutable_interfaces(), r.limits.max_interfaces, "interfaces");
  std::size_t addresses_left = r.limits.max_addresses;
  for (auto& i : *t.mutable_interfaces()) {
    r.name(i.mutable_name());
    r.name(i.mutable_mac());
    r.name(i.mutable_oper_state());
    r.count(i.mutable_addresses(), std::min(r.limits.max_addresses_per_interface, addresses_left),
            "addresses");
    addresses_left -= static_cast<std::size_t>(i.addresses_size());
    for (auto& a : *i.mutable_addresses()) r.name(a.mutable_address());
  }
}

}  // namespace

std::string cap_telemetry(pb::Telemetry& telemetry, const guest_data_limits& limits) {
  trim_report r(limits);
  cap_telemetry(telemetry, r);
  return r.text();
}

std::string cap_guest_message(pb::Envelope& message, const guest_data_limits& limits) {
  trim_report r(limits);
  switch (message.body_case()) {
    case pb::Envelope::kTelemetry:
      cap_telemetry(*message.mutable_telemetry(), r);
      break;
    case pb::Envelope::kHelloAck: {
      auto* h = message.mutable_hello_ack();
      r.name(h->mutable_software_version());
      r.name(h->mutable_hostname());
      r.name(h->mutable_boot_id());
      cap_os(h->mutable_os(), r);
      cap_capabilities(h->mutable_capabilities(), r);
      break;
    }
    case pb::Envelope::kInfo: {
      auto* i = message.mutable_info();
      r.name(i->mutable_software_version());
      r.name(i->mutable_hostname());
      r.name(i->mutable_boot_id());
      cap_os(i->mutable_os(), r);
      cap_capabilities(i->mutable_capabilities(), r);
      break;
    }
    case pb::Envelope::kAgentReady: {
      auto* a = message.mutable_agent_ready();
      r.name(a->mutable_software_version());
      r.name(a->mutable_boot_id());
      break;
    }
    case pb::Envelope::kError: {
      auto* e = message.mutable_error();
      if (e->message().size() > limits.max_error_bytes) {
        e->mutable_message()->resize(
            common::utf8_prefix(e->message(), limits.max_error_bytes).size());
        r.dropped += fmt::format("error message cut to {} bytes", limits.max_error_bytes);
      }
      r.name(e->mutable_rule());
      break;
    }
    default:
      break;
  }
  return r.text();
}

}  // namespace qxa::host
