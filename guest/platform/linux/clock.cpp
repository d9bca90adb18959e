// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/clock.hpp"

#include <fcntl.h>
#include <linux/rtc.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <utmpx.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include "qxa/common/posix.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

using common::read_all;
using common::unique_fd;

namespace {

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// A fixed-size utmp field, up to its first NUL.
template <std::size_t N>
std::string field(const char (&f)[N]) {
  return std::string(f, ::strnlen(f, N));
}

// The calendar fields of a struct tm as an rtc_time, or back (the kernel's rtc_time has the
// same fields); the daylight-saving flag is left for mktime to find.
template <typename To, typename From>
To civil_time(const From& from) {
  To to{};
  to.tm_sec = from.tm_sec;
  to.tm_min = from.tm_min;
  to.tm_hour = from.tm_hour;
  to.tm_mday = from.tm_mday;
  to.tm_mon = from.tm_mon;
  to.tm_year = from.tm_year;
  to.tm_isdst = -1;
  return to;
}

}  // namespace

std::string timezone_name(std::string_view link, std::string_view timezone_file_text) {
  constexpr std::string_view marker = "zoneinfo/";
  if (const auto at = link.find(marker); at != std::string_view::npos) {
    auto name = link.substr(at + marker.size());
    // "posix/Europe/Paris" and "right/..." are the same zones with other leap-second rules.
    for (std::string_view prefix : {"posix/", "right/"}) {
      if (name.starts_with(prefix)) name.remove_prefix(prefix.size());
    }
    if (!name.empty()) return std::string(name);
  }
  auto line = timezone_file_text.substr(0, timezone_file_text.find('\n'));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
  return std::string(line);
}

timezone_info read_timezone(const std::string& etc_root) {
  timezone_info tz;
  char link[PATH_MAX];
  const ssize_t n = ::readlink((etc_root + "/localtime").c_str(), link, sizeof link - 1);
  tz.name = timezone_name(n > 0 ? std::string_view(link, static_cast<std::size_t>(n)) : "",
                          read_file(etc_root + "/timezone").value_or(""));
  ::tzset();  // the C library reads /etc/localtime again when it changed
  const std::time_t now = ::time(nullptr);
  std::tm local{};
  if (::localtime_r(&now, &local) != nullptr) {
    tz.utc_offset_seconds = static_cast<std::int32_t>(local.tm_gmtoff);
    if (local.tm_zone != nullptr) tz.abbreviation = local.tm_zone;
  }
  if (tz.name.empty() && tz.utc_offset_seconds == 0) tz.name = "UTC";  // no zone configured
  return tz;
}

bool hardware_clock_is_local(std::string_view text) {
  // Line 3 of /etc/adjtime: "UTC" or "LOCAL".
  for (int line = 0; line < 2; ++line) {
    const auto nl = text.find('\n');
    if (nl == std::string_view::npos) return false;
    text.remove_prefix(nl + 1);
  }
  return text.substr(0, text.find('\n')).starts_with("LOCAL");
}

std::optional<std::string> write_hardware_clock(const std::string& device,
                                                std::int64_t unix_seconds, bool local) {
  unique_fd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    return errno == ENOENT ? std::string("no hardware clock")
                           : device + ": " + std::strerror(errno);
  }
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if ((local ? ::localtime_r(&t, &tm) : ::gmtime_r(&t, &tm)) == nullptr) {
    return std::string("the time does not fit the hardware clock");
  }
  auto rtc = civil_time<rtc_time>(tm);
  if (::ioctl(fd.get(), RTC_SET_TIME, &rtc) != 0) {
    return device + ": " + std::strerror(errno);
  }
  return std::nullopt;
}

common::result<std::int64_t> read_hardware_clock(const std::string& device, bool local) {
  unique_fd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return {common::errc::unavailable, "no hardware clock"};
    return {common::errc::unavailable, device + ": " + std::strerror(errno)};
  }
  rtc_time rtc{};
  if (::ioctl(fd.get(), RTC_RD_TIME, &rtc) != 0) {
    return {common::errc::unavailable, device + ": " + std::strerror(errno)};
  }
  auto tm = civil_time<std::tm>(rtc);
  const std::time_t t = local ? ::mktime(&tm) : ::timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) {
    return {common::errc::unavailable, device + ": the hardware clock holds no valid time"};
  }
  return static_cast<std::int64_t>(t);
}

std::optional<clock_change> set_clock(std::int64_t target_unix_ns, bool slew, int& error) {
  clock_change c;
  c.offset_ns = realtime_ns() - target_unix_ns;
  if (slew && c.offset_ns >= -max_slew_ns && c.offset_ns <= max_slew_ns) {
    timeval delta{};
    const std::int64_t us = -c.offset_ns / 1000;  // what to add to the clock
    delta.tv_sec = static_cast<time_t>(us / 1'000'000);
    delta.tv_usec = static_cast<suseconds_t>(us % 1'000'000);
    if (::adjtime(&delta, nullptr) != 0) {
      error = errno;
      return std::nullopt;
    }
    c.slewed = true;
    return c;
  }
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(target_unix_ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(target_unix_ns % 1'000'000'000);
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) {
    error = errno;
    return std::nullopt;
  }
  return c;
}

std::vector<login_session> parse_utmp(std::string_view bytes, std::size_t max) {
  std::vector<login_session> out;
  for (std::size_t at = 0; at + sizeof(utmpx) <= bytes.size(); at += sizeof(utmpx)) {
    utmpx u{};
    std::memcpy(&u, bytes.data() + at, sizeof u);
    if (u.ut_type != USER_PROCESS || u.ut_user[0] == '\0') continue;
    login_session s;
    s.user = field(u.ut_user);
    s.terminal = field(u.ut_line);
    s.host = field(u.ut_host);
    s.login_unix_ms = std::int64_t{u.ut_tv.tv_sec} * 1000 + u.ut_tv.tv_usec / 1000;
    s.pid = static_cast<std::uint32_t>(u.ut_pid);
    out.push_back(std::move(s));
  }
  std::stable_sort(out.begin(), out.end(), [](const login_session& a, const login_session& b) {
    return a.login_unix_ms < b.login_unix_ms;
  });
  if (out.size() > max) out.resize(max);
  return out;
}

std::vector<login_session> read_logins(const std::string& utmp_path) {
  // A utmp of 1 MiB holds over 2,500 records: more than any real guest's.
  unique_fd fd(::open(utmp_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) return {};
  auto bytes = read_all(fd.get(), 1u << 20);
  if (!bytes) return {};
  auto sessions = parse_utmp(*bytes);
  std::erase_if(sessions, [](const login_session& s) {
    return s.pid > 0 && ::kill(static_cast<pid_t>(s.pid), 0) != 0 && errno == ESRCH;
  });
  return sessions;
}

}  // namespace qxa::guest
