// SPDX-License-Identifier: MIT
// The wire schema's descriptors (a serialized google.protobuf.FileDescriptorSet of the .proto
// files and their imports), for reflection where the generated code is lite.
#pragma once

#include <string_view>

namespace qxa::proto {

std::string_view descriptor_set() noexcept;

}  // namespace qxa::proto
