// SPDX-License-Identifier: MIT
// What the two programs say to systemd: readiness, stopping, reloading and watchdog kicks over
// the notification protocol (one datagram to $NOTIFY_SOCKET), and start-up errors with their
// priority when standard error is the journal. The protocol is small and stable, so it is
// written here rather than linking libsystemd into static binaries.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace qxa::common {

/// Sends "READY=1", "STOPPING=1", "WATCHDOG=1"... when started by systemd with a
/// notification socket; does nothing otherwise.
void sd_notify(std::string_view state) noexcept;

/// The watchdog interval systemd expects kicks within, when it is meant for this process.
std::optional<std::chrono::microseconds> sd_watchdog_interval() noexcept;

/// Prints "PROGRAM: MESSAGE" on standard error, as an error ("<3>" first) when standard error
/// is the journal: a process that cannot start shows in `journalctl -p err`.
void print_startup_error(std::string_view program, std::string_view message) noexcept;

}  // namespace qxa::common
