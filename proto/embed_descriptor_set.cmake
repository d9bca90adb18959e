# SPDX-License-Identifier: MIT
# Writes the serialized FileDescriptorSet INPUT as a C++ source OUTPUT that defines
# qxa::proto::descriptor_set() (see include/qxa/proto/descriptor_set.hpp).
file(READ ${INPUT} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE ${OUTPUT} "// Generated from ${INPUT} by embed_descriptor_set.cmake.
#include \"qxa/proto/descriptor_set.hpp\"

namespace qxa::proto {
namespace {
const unsigned char data[] = {
${bytes}
};
}  // namespace

std::string_view descriptor_set() noexcept {
  return {reinterpret_cast<const char*>(data), sizeof data};
}

}  // namespace qxa::proto
")
