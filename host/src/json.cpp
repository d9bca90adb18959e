// SPDX-License-Identifier: MIT
#include "qxa/host/json.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <memory>
#include <stdexcept>
#include <string>

#include "qxa/proto/descriptor_set.hpp"

namespace qxa::host {
namespace {

namespace gp = google::protobuf;
using json = nlohmann::ordered_json;

/// The schema, built once from the compiled-in descriptor set.
struct schema {
  gp::DescriptorPool pool;
  gp::DynamicMessageFactory factory{&pool};

  schema() {
    gp::FileDescriptorSet set;
    const auto bytes = proto::descriptor_set();
    if (!set.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      throw std::logic_error("the compiled-in descriptor set does not parse");
    }
    for (const auto& file : set.file()) {
      if (pool.BuildFile(file) == nullptr) {
        throw std::logic_error("the compiled-in descriptor set does not build: " + file.name());
      }
    }
  }
};

schema& the_schema() {
  static schema s;  // the factory is safe to use from several threads
  return s;
}

/// "VmState" -> "VM_STATE_": the prefix of its values' names.
std::string value_prefix(const gp::EnumDescriptor& e) {
  std::string out;
  for (const char c : e.name()) {
    if (std::isupper(static_cast<unsigned char>(c)) && !out.empty()) out += '_';
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out + "_";
}

/// "VM_STATE_STALE_SOCKET" -> "stale-socket".
std::string short_name(const gp::EnumDescriptor& e, std::string name) {
  if (const auto prefix = value_prefix(e); name.starts_with(prefix)) name.erase(0, prefix.size());
  for (auto& c : name) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return name;
}

bool is_64_bit(gp::FieldDescriptor::CppType t) {
  return t == gp::FieldDescriptor::CPPTYPE_INT64 || t == gp::FieldDescriptor::CPPTYPE_UINT64;
}

void tidy(json& object, const gp::Descriptor& d);

void tidy_value(json& v, const gp::FieldDescriptor& f) {
  const auto t = f.cpp_type();
  if (t == gp::FieldDescriptor::CPPTYPE_MESSAGE) {
    if (v.is_object()) tidy(v, *f.message_type());
  } else if (is_64_bit(t) && v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (t == gp::FieldDescriptor::CPPTYPE_INT64) {
      v = std::stoll(s);
    } else {
      v = std::stoull(s);
    }
  } else if (t == gp::FieldDescriptor::CPPTYPE_ENUM && v.is_string()) {
    v = short_name(*f.enum_type(), v.get<std::string>());
  }
}

void tidy(json& object, const gp::Descriptor& d) {
  for (int i = 0; i < d.field_count(); ++i) {
    const auto& f = *d.field(i);
    auto it = object.find(f.name());
    if (it == object.end() || f.is_map()) continue;  // maps (exec's env) hold strings only
    if (f.is_repeated() && it->is_array()) {
      for (auto& element : *it) tidy_value(element, f);
    } else {
      tidy_value(*it, f);
    }
  }
}

}  // namespace

json to_json(const gp::MessageLite& message) {
  auto& s = the_schema();
  const auto* d = s.pool.FindMessageTypeByName(message.GetTypeName());
  if (d == nullptr) throw std::logic_error("no descriptor for " + message.GetTypeName());
  std::unique_ptr<gp::Message> m(s.factory.GetPrototype(d)->New());
  // What arrived here parsed once already (UTF-8 strings included), so it parses again.
  if (!m->ParseFromString(message.SerializeAsString())) {
    throw std::logic_error("a " + message.GetTypeName() + " that does not parse twice");
  }
  gp::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string text;
  if (const auto st = gp::util::MessageToJsonString(*m, &text, options); !st.ok()) {
    throw std::logic_error("a " + message.GetTypeName() +
                           " not printable as JSON: " + st.ToString());
  }
  auto j = json::parse(text);
  tidy(j, *d);
  return j;
}

}  // namespace qxa::host
