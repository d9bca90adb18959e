# SPDX-License-Identifier: MIT
# Makes a configuration file's manual page from the file as shipped, whose comments document
# it: the opening comment is the description, each [table] a subsection, each commented
# `key = default  # what it does` a tagged paragraph, other comments the table's prose.
#   awk -v page=agent.toml -v path=/etc/quantix-kvm/agent.toml -v summary="..." \
#       -v program=quantix-kvm-agent -v section=8 -v version=0.1.0 -v date="..." -f config2man.awk
function esc(s) {
  gsub(/\\/, "\\e", s)
  gsub(/-/, "\\-", s)
  if (s ~ /^[.']/) s = "\\&" s
  return s
}
function quoted(s) {  # a macro's argument: its double quotes as characters
  gsub(/"/, "\\(dq", s)
  return "\"" s "\""
}
function flush_key() {
  if (key != "") printf ".TP\n.B %s\n", quoted(esc(key))
  if (key != "" && text != "") printf "%s\n", esc(text)
  key = ""
  text = ""
}
function flush_prose() {
  if (prose != "") printf ".PP\n%s\n", esc(prose)
  prose = ""
}
BEGIN {
  printf ".TH %s 5 \"%s\" \"quantix-kvm %s\" \"File Formats\"\n", toupper(page), date, version
  printf ".SH NAME\n%s \\- %s\n", page, summary
  printf ".SH SYNOPSIS\n.I %s\n", esc(path)
  printf ".SH DESCRIPTION\n"
  opening = 1
}
opening && /^#/ {
  line = $0
  sub(/^# ?/, "", line)
  prose = prose == "" ? line : prose " " line
  next
}
opening && /^$/ {
  flush_prose()
  printf ".PP\nThe file is TOML. Each setting below is shown as the file shows it, with its default" \
         " value; a line's leading # is removed to set it.\n"
  printf ".SH SETTINGS\n"
  opening = 0
  next
}
/^\[/ { flush_key(); flush_prose(); printf ".SS \"%s\"\n", $0; next }
/^#  +# / {  # the continuation of the key above
  line = $0
  sub(/^# +# /, "", line)
  text = text " " line
  next
}
/^# [a-z_]+ = / {
  flush_key()
  flush_prose()
  line = substr($0, 3)
  split_at = index(line, "   # ")
  if (split_at == 0) split_at = index(line, "  # ")
  if (split_at == 0) split_at = index(line, " # ")
  if (split_at > 0) {
    key = substr(line, 1, split_at - 1)
    text = substr(line, split_at)
    sub(/^ +# /, "", text)
  } else {
    key = line
    text = ""
  }
  sub(/ +$/, "", key)
  next
}
/^#/ {
  flush_key()
  line = $0
  sub(/^# ?/, "", line)
  prose = prose == "" ? line : prose " " line
  next
}
/^$/ { flush_key(); flush_prose(); next }
END {
  flush_key()
  flush_prose()
  printf ".SH FILES\n.TP\n.I %s\n", esc(path)
  printf "read by %s at start%s.\n", esc(program), reload
  printf ".SH SEE ALSO\n.BR %s (%s)\n", esc(program), section
}
