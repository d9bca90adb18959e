// SPDX-License-Identifier: MIT
// The one place where what the platform readers return becomes protobuf: telemetry and the OS
// identity (names made UTF-8).
#pragma once

#include "quantix/agent/v1/agent.pb.h"
#include "quantix/agent/v1/telemetry.pb.h"
#include "qxa/guest/platform/sampler.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest::ops {

namespace pb = ::quantix::agent::v1;

/// A sample as the wire has it; the agent sets its sequence number.
pb::Telemetry to_proto(const system_sample& s);
/// The identity as the wire has it.
pb::OsInfo to_proto(const os_identity& os);

}  // namespace qxa::guest::ops
