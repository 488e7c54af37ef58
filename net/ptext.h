/*  ptext - the text chores chat platforms need: UTF-8 checks, lengths in
    the units each platform counts, cutting long replies, filling templates.

    Platforms count differently: Telegram's offsets and its 4096 limit are
    in UTF-16 code units, Twitch's 500 in characters (code points), HTTP
    APIs usually in bytes. Cuts never split a UTF-8 sequence or a UTF-16
    surrogate pair.

    Invalid UTF-8 from outside is not dropped wholesale: ptext_scrub
    replaces each bad byte with a sentinel (U+FFFF, a noncharacter no real
    text carries), so a JSON page with one bad message still parses and only
    the message whose strings hold the sentinel is refused.
*/
#ifndef PTEXT_H_INCLUDED
#define PTEXT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PTEXT_BYTES = 0,
    PTEXT_CODEPOINTS = 1,
    PTEXT_UTF16 = 2
} ptext_unit_t;

//  The sentinel ptext_scrub writes for each invalid byte (U+FFFF in UTF-8).
#define PTEXT_SENTINEL "\xEF\xBF\xBF"

//  True if `s` (len bytes) is well-formed UTF-8 (no overlongs, surrogates
//  or code points beyond U+10FFFF).
bool ptext_utf8_valid (const char *s, size_t len);

//  Returns a copy of `s` with every byte that is not part of well-formed
//  UTF-8 replaced by PTEXT_SENTINEL; `*bad` (may be NULL) gets how many were
//  replaced. The copy is NUL-terminated; `*out_len` (may be NULL) gets its
//  length. Caller owns the result.
char *ptext_scrub (const char *s, size_t len, size_t *out_len, size_t *bad);

//  True if `s` holds the sentinel (a scrubbed invalid byte).
bool ptext_has_sentinel (const char *s);

//  Length of `s` (len bytes of valid UTF-8) in `unit`.
size_t ptext_length (const char *s, size_t len, ptext_unit_t unit);

//  Copies the part of `text` (valid UTF-8) from UTF-16 offset `offset`,
//  `length` units long, into `out` (NUL-terminated). Returns -1 if the
//  range is outside the text, splits a surrogate pair, or does not fit.
int ptext_utf16_slice (const char *text, size_t offset, size_t length, char *out, size_t outlen);

//  Byte length of the longest prefix of `s` (len bytes of valid UTF-8) that
//  is at most `max` units long. If the text does not fit and `at_space`,
//  the cut moves back to the last whitespace in the second half of that
//  prefix, so words stay whole when they can.
size_t ptext_cut (const char *s, size_t len, size_t max, ptext_unit_t unit, bool at_space);

//  Looks up a template variable; returns its value or NULL when unknown.
typedef const char *(ptext_lookup_fn) (void *ctx, const char *name);

//  Fills "{name}" placeholders in `template` with lookup's values; unknown
//  names are left as they are. Caller owns the result.
char *ptext_fill (const char *template, ptext_lookup_fn *lookup, void *ctx);

//  A copy of `s` no longer than `max` units: cut at a space where it can
//  be, ending with an ellipsis ("…", which counts toward `max`). Caller
//  owns the result.
char *ptext_trim (const char *s, size_t max, ptext_unit_t unit);

#endif
