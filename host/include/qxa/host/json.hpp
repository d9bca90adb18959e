// SPDX-License-Identifier: MIT
// JSON views of the protocol's messages, for qx-agent --json and for programs that embed
// qxa::host: protobuf's own JSON printer, over the schema's descriptors (the generated code is
// lite; see qxa/proto/descriptor_set.hpp), with
// - field names as in the .proto, and every field present (0, "", false included);
// - 64-bit integers as JSON numbers, not the proto3 mapping's strings: scripts and jq compare
//   byte counts and timestamps as numbers, and every value fits a JSON parser's 64-bit integer;
// - enum values by short lowercase name, as qx-agent's text shows them: VM_STATE_STALE_SOCKET
//   is "stale-socket", FAMILY_IPV6 "ipv6" (a value the schema does not name stays a number);
// - bytes fields in base64, as protobuf's mapping has them (where they hold text, such as SSH
//   keys, qx-agent prints its own view).
#pragma once

#include <google/protobuf/message_lite.h>

#include <nlohmann/json.hpp>

namespace qxa::host {

nlohmann::ordered_json to_json(const google::protobuf::MessageLite& message);

}  // namespace qxa::host
