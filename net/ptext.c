/*  ptext - text chores for chat platforms. See ptext.h. */
#include "net/ptext.h"
#include "common/palloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

//  Length of the well-formed UTF-8 sequence at p (1..4), or 0 if it is not
//  one. NUL counts as invalid: it would cut a C string short.
static size_t s_decode (const unsigned char *p, size_t left, uint32_t *cp)
{
    unsigned char c = p[0];
    if (c < 0x80) {
        *cp = c;
        return c ? 1 : 0;
    }
    size_t n;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0)
        n = 2, v = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        n = 3, v = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        n = 4, v = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return n;
}

static size_t s_units (uint32_t cp, size_t bytes, ptext_unit_t unit)
{
    switch (unit) {
    case PTEXT_BYTES: return bytes;
    case PTEXT_CODEPOINTS: return 1;
    case PTEXT_UTF16: return cp >= 0x10000 ? 2 : 1;
    }
    return bytes;
}

bool ptext_utf8_valid (const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    uint32_t cp;
    for (size_t i = 0; i < len;) {
        size_t n = s_decode (p + i, len - i, &cp);
        if (!n)
            return false;
        i += n;
    }
    return true;
}

char *ptext_scrub (const char *s, size_t len, size_t *out_len, size_t *bad)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t replaced = 0;
    uint32_t cp;
    //  Each bad byte grows to three: size the copy for the worst case only if needed.
    for (size_t i = 0; i < len;) {
        size_t n = s_decode (p + i, len - i, &cp);
        if (!n)
            replaced++, n = 1;
        i += n;
    }
    size_t size = len + replaced * 2;
    char *out = pmalloc (size + 1);
    if (!replaced)
        memcpy (out, s, len);
    else {
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            size_t n = s_decode (p + i, len - i, &cp);
            if (n) {
                memcpy (out + o, s + i, n);
                o += n;
                i += n;
            }
            else {
                memcpy (out + o, PTEXT_SENTINEL, 3);
                o += 3;
                i++;
            }
        }
    }
    out[size] = 0;
    if (out_len)
        *out_len = size;
    if (bad)
        *bad = replaced;
    return out;
}

bool ptext_has_sentinel (const char *s)
{
    return s && strstr (s, PTEXT_SENTINEL) != NULL;
}

size_t ptext_length (const char *s, size_t len, ptext_unit_t unit)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t total = 0;
    uint32_t cp;
    for (size_t i = 0; i < len;) {
        size_t n = s_decode (p + i, len - i, &cp);
        if (!n)
            n = 1, cp = 0xFFFD;
        total += s_units (cp, n, unit);
        i += n;
    }
    return total;
}

int ptext_utf16_slice (const char *text, size_t offset, size_t length, char *out, size_t outlen)
{
    const unsigned char *p = (const unsigned char *) text;
    size_t len = strlen (text);
    size_t unit = 0, i = 0, start = SIZE_MAX;
    uint32_t cp;
    while (1) {
        if (unit == offset && start == SIZE_MAX)
            start = i;
        if (start != SIZE_MAX && unit == offset + length)
            break;
        if (unit > offset + length || i >= len)
            return -1;  //  past the end, or the range splits a surrogate pair
        size_t n = s_decode (p + i, len - i, &cp);
        if (!n)
            return -1;
        unit += cp >= 0x10000 ? 2 : 1;
        i += n;
    }
    if (i - start + 1 > outlen)
        return -1;
    memcpy (out, text + start, i - start);
    out[i - start] = 0;
    return 0;
}

size_t ptext_cut (const char *s, size_t len, size_t max, ptext_unit_t unit, bool at_space)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t total = 0, i = 0;
    uint32_t cp;
    while (i < len) {
        size_t n = s_decode (p + i, len - i, &cp);
        if (!n)
            n = 1, cp = 0xFFFD;
        size_t u = s_units (cp, n, unit);
        if (total + u > max)
            break;
        total += u;
        i += n;
    }
    if (i == len || !at_space || s[i] == ' ' || s[i] == '\n' || s[i] == '\t')
        return i;   //  all of it, a hard cut, or the cut is already between words
    for (size_t k = i; k > i / 2; k--)
        if (s[k - 1] == ' ' || s[k - 1] == '\n' || s[k - 1] == '\t')
            return k - 1 > 0 ? k - 1 : i;
    return i;
}

//  --- templates ---------------------------------------------------------------

typedef struct {
    char *data;
    size_t len, cap;
} s_buf_t;

static void s_append (s_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = prealloc (b->data, b->cap);
    }
    memcpy (b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

static bool s_name_char (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
           || c == '.' || c == '-';
}

char *ptext_fill (const char *template, ptext_lookup_fn *lookup, void *ctx)
{
    s_buf_t b = {NULL, 0, 0};
    s_append (&b, "", 0);
    const char *at = template;
    while (*at) {
        const char *open = strchr (at, '{');
        if (!open) {
            s_append (&b, at, strlen (at));
            break;
        }
        s_append (&b, at, (size_t) (open - at));
        const char *close = open + 1;
        while (s_name_char (*close))
            close++;
        char name[64];
        size_t n = (size_t) (close - open - 1);
        const char *value = NULL;
        if (*close == '}' && n > 0 && n < sizeof name) {
            memcpy (name, open + 1, n);
            name[n] = 0;
            value = lookup (ctx, name);
        }
        if (value) {
            s_append (&b, value, strlen (value));
            at = close + 1;
        }
        else {
            s_append (&b, "{", 1);
            at = open + 1;
        }
    }
    return b.data;
}

char *ptext_trim (const char *s, size_t max, ptext_unit_t unit)
{
    static const char ellipsis[] = "\xE2\x80\xA6";
    size_t len = strlen (s);
    if (!max || ptext_length (s, len, unit) <= max)
        return pstrdup (s);
    size_t mark = ptext_length (ellipsis, strlen (ellipsis), unit);
    size_t cut = ptext_cut (s, len, max > mark ? max - mark : 0, unit, true);
    while (cut > 0 && (s[cut - 1] == ' ' || s[cut - 1] == '\n' || s[cut - 1] == '\t'))
        cut--;
    char *out = pmalloc (cut + sizeof ellipsis);
    memcpy (out, s, cut);
    memcpy (out + cut, ellipsis, sizeof ellipsis);
    return out;
}
