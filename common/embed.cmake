# Turns a file into a C source defining `const char pconfig_default_json[]`.
file (READ ${IN} hex HEX)
string (REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file (WRITE ${OUT} "/* Generated from config/default.json; do not edit. */\n"
                   "const char pconfig_default_json[] = {${bytes} 0x00};\n")
