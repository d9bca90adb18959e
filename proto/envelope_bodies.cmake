# SPDX-License-Identifier: MIT
# Writes the bodies of Envelope's `oneof body` in INPUT (agent.proto) as an X-macro list, OUTPUT:
#   QXA_ENVELOPE_BODY(field_name, CaseName, MessageType, number)
# where pb::Envelope::k<CaseName> is the generated case constant. What lists every body (its
# name in logs, the host's caps, the agent's operations) is derived from this, so a body added
# to the schema is listed everywhere by the build, or the build fails where it must be placed.
file(READ ${INPUT} proto)
string(REGEX MATCH "message Envelope {[^}]*oneof body {([^}]*)}" block "${proto}")
if(NOT block)
  message(FATAL_ERROR "${INPUT}: no `oneof body` in message Envelope")
endif()
string(REGEX REPLACE "//[^\n]*" "" fields "${CMAKE_MATCH_1}")
string(REGEX MATCHALL "[A-Za-z_][A-Za-z0-9_]*[ \t]+[a-z_][a-z0-9_]*[ \t]*=[ \t]*[0-9]+" fields
       "${fields}")
set(lines "")
foreach(field IN LISTS fields)
  string(REGEX MATCH "^([A-Za-z0-9_]+)[ \t]+([a-z0-9_]+)[ \t]*=[ \t]*([0-9]+)$" _ "${field}")
  set(type ${CMAKE_MATCH_1})
  set(name ${CMAKE_MATCH_2})
  set(number ${CMAKE_MATCH_3})
  # protoc's case constant: the field name in CamelCase (hello_ack -> HelloAck).
  string(REPLACE "_" ";" words "${name}")
  set(camel "")
  foreach(word IN LISTS words)
    string(SUBSTRING "${word}" 0 1 first)
    string(SUBSTRING "${word}" 1 -1 rest)
    string(TOUPPER "${first}" first)
    string(APPEND camel "${first}${rest}")
  endforeach()
  string(APPEND lines "QXA_ENVELOPE_BODY(${name}, ${camel}, ${type}, ${number})\n")
endforeach()
list(LENGTH fields count)
if(count LESS 10)
  message(FATAL_ERROR "${INPUT}: only ${count} bodies read from Envelope's oneof")
endif()
get_filename_component(source ${INPUT} NAME)
set(text "// Generated from ${source} by envelope_bodies.cmake: Envelope's bodies, in the schema's
// order. Define QXA_ENVELOPE_BODY(field_name, CaseName, MessageType, number), then include.
${lines}")
# Written only when it changes, so that what includes it is not rebuilt for nothing.
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUTPUT} "${text}")
endif()
