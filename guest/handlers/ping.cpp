// SPDX-License-Identifier: MIT
#include "handlers.hpp"

namespace qxa::guest::handlers {

asio::awaitable<pb::Envelope> ping(request_context, pb::Envelope request) {
  pb::Envelope reply;
  reply.mutable_pong()->set_nonce(request.ping().nonce());
  co_return reply;
}

}  // namespace qxa::guest::handlers
