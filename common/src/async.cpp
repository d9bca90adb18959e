// SPDX-License-Identifier: MIT
#include "qxa/common/async.hpp"

#include <exception>
#include <typeinfo>

#include "qxa/common/log.hpp"

namespace qxa::common {

void log_contained(const std::string& what, std::exception_ptr e) noexcept {
  try {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log_error("{} ended by an exception, contained: {} ({})", what, ex.what(), typeid(ex).name());
    } catch (...) {
      log_error("{} ended by an exception of unknown type, contained", what);
    }
  } catch (...) {
    // Logging itself failed (out of memory): nothing more can be said.
  }
}

}  // namespace qxa::common
