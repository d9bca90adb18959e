// SPDX-License-Identifier: MIT
// The guest's clocks and who uses the guest: the time zone, setting the system clock (stepped
// or slewed) and the hardware clock, and the login sessions in utmp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/common/error.hpp"

namespace qxa::guest {

struct timezone_info {
  std::string name;          ///< "Europe/Paris"; empty when the system does not say
  std::string abbreviation;  ///< "CET"
  std::int32_t utc_offset_seconds = 0;
};

/// The zone's name from where `localtime_link` points ("/usr/share/zoneinfo/Europe/Paris"), or
/// else from the first line of `timezone_file_text` (Debian's /etc/timezone); empty if neither.
std::string timezone_name(std::string_view localtime_link, std::string_view timezone_file_text);

/// The time zone in force: its name from `etc_root`/localtime and `etc_root`/timezone, its
/// abbreviation and offset from the C library (which reads /etc/localtime, or TZ).
timezone_info read_timezone(const std::string& etc_root = "/etc");

/// Whether /etc/adjtime says the hardware clock keeps local time (its third line is "LOCAL");
/// UTC otherwise, as on most Linux systems.
bool hardware_clock_is_local(std::string_view adjtime_text);

/// Writes `unix_seconds` to the hardware clock `device` (RTC_SET_TIME), in local time when
/// `local`. Nothing, or why not ("no hardware clock", ...).
std::optional<std::string> write_hardware_clock(const std::string& device,
                                                std::int64_t unix_seconds, bool local);

/// Reads the hardware clock `device` (RTC_RD_TIME), which keeps local time when `local`: the
/// Unix time in seconds, or why not.
common::result<std::int64_t> read_hardware_clock(const std::string& device, bool local);

/// The largest offset set_clock() slews rather than steps.
inline constexpr std::int64_t max_slew_ns = 500'000'000;

struct clock_change {
  std::int64_t offset_ns = 0;  ///< the clock minus the target, before the change
  bool slewed = false;
};
/// Brings CLOCK_REALTIME to `target_unix_ns`: slewed with adjtime when `slew` and the offset is
/// at most max_slew_ns, stepped with clock_settime otherwise. The errno on failure.
std::optional<clock_change> set_clock(std::int64_t target_unix_ns, bool slew, int& error);

/// One login session from utmp.
struct login_session {
  std::string user, terminal, host;
  std::int64_t login_unix_ms = 0;
  std::uint32_t pid = 0;
};

/// The USER_PROCESS records of a utmp file's bytes, oldest login first, at most `max`; a
/// trailing partial record is ignored.
std::vector<login_session> parse_utmp(std::string_view bytes, std::size_t max = 256);

/// The login sessions in `utmp_path` whose login process still runs (a crashed login leaves its
/// record behind).
std::vector<login_session> read_logins(const std::string& utmp_path = "/var/run/utmp");

}  // namespace qxa::guest
