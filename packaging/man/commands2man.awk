# SPDX-License-Identifier: MIT
# Turns the `--help` of qx-agent's commands (CLI11's layout), one after another, into the roff
# of a COMMANDS section for help2man's --include: each command's usage as a heading, its
# description, then its arguments and options as tagged paragraphs.
function esc(s) {
  gsub(/\\/, "\\e", s)
  return s
}
function opt(s) {  # an option's name: bold, its hyphens minus signs
  s = esc(s)
  gsub(/-/, "\\-", s)
  gsub(/"/, "\\(dq", s)
  return s
}
function flush() {
  if (tag != "" && tag !~ /^-h,--help/) printf ".TP\n.B \"%s\"\n%s\n", opt(tag), esc(text)
  tag = ""
  text = ""
}
BEGIN { print "[commands]" }
/^Usage: / {
  flush()
  sub(/^Usage: /, "")
  printf ".SS \"%s\"\n%s\n", opt($0), esc(description)
  description = ""
  next
}
/^(Positionals|Options):$/ { flush(); next }
/^$/ { flush(); next }
/^                              / {  # a description on its own line, or its continuation
  sub(/^ +/, "")
  text = text == "" ? $0 : text " " $0
  next
}
/^  [^ ]/ {  # a name, then its description after two spaces or more, or on the next line
  flush()
  line = substr($0, 3)
  if (match(line, /  +/)) {
    tag = substr(line, 1, RSTART - 1)
    text = substr(line, RSTART + RLENGTH)
  } else {
    tag = line
  }
  next
}
{  # the lines before "Usage:": the command's description
  flush()
  description = description == "" ? $0 : description " " $0
}
END { flush() }
