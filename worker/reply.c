/*  reply - makes what an LLM wrote fit to post. See reply.h. */
#include "worker/reply.h"
#include "common/palloc.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

//  Removes <think>...</think> blocks; an unclosed one takes the rest.
static void s_drop_reasoning (char *text)
{
    char *open;
    if (!strchr (text, '<'))
        return;     //  nearly every reply: no tag at all (strcasestr costs a setup per call)
    while ((open = strcasestr (text, "<think>"))) {
        char *close = strcasestr (open, "</think>");
        if (!close) {
            *open = 0;
            return;
        }
        close += strlen ("</think>");
        memmove (open, close, strlen (close) + 1);
    }
}

static void s_trim (char *text)
{
    char *start = text;
    while (*start && isspace ((unsigned char) *start))
        start++;
    size_t n = strlen (start);
    while (n > 0 && isspace ((unsigned char) start[n - 1]))
        n--;
    memmove (text, start, n);
    text[n] = 0;
}

//  "Philosopher: Indeed..." -> "Indeed..." (also "**Philosopher**:" and "[Philosopher]").
static void s_drop_own_name (char *text, const char *name)
{
    size_t n = strlen (name);
    if (!n)
        return;
    const char *p = text;
    while (*p == '*' || *p == '[')
        p++;
    if (strncasecmp (p, name, n))
        return;
    p += n;
    while (*p == '*' || *p == ']')
        p++;
    if (*p != ':')
        return;
    p++;
    memmove (text, p, strlen (p) + 1);
    s_trim (text);
}

//  Byte offset of the first `chars` characters of UTF-8 `text`.
static size_t s_offset (const char *text, size_t chars)
{
    size_t i = 0;
    while (text[i] && chars) {
        i++;
        while (((unsigned char) text[i] & 0xc0) == 0x80)
            i++;
        chars--;
    }
    return i;
}

//  Cuts to at most `limit` characters and `max_bytes` bytes, at a word
//  boundary when one is near the end, and marks the cut with "…". May move
//  the text (the ellipsis can be longer than what it replaces).
static char *s_cut (char *text, size_t limit, size_t max_bytes)
{
    static const char ellipsis[] = "\xe2\x80\xa6";  //  U+2026, 3 bytes
    size_t len = strlen (text);
    size_t cut = len;
    if (limit && text[s_offset (text, limit)])
        cut = s_offset (text, limit - 1);
    if (cut + 3 > max_bytes && len > max_bytes) {
        cut = max_bytes - 3;
        while (cut > 0 && ((unsigned char) text[cut] & 0xc0) == 0x80)
            cut--;
    }
    if (cut == len)
        return text;
    //  Back to the last space if it is in the last fifth: whole words read better.
    size_t word = cut;
    while (word > 0 && !isspace ((unsigned char) text[word]))
        word--;
    if (word > cut - cut / 5)
        cut = word;
    while (cut > 0 && isspace ((unsigned char) text[cut - 1]))
        cut--;
    if (cut + sizeof ellipsis > len + 1)
        text = prealloc (text, cut + sizeof ellipsis);
    memcpy (text + cut, ellipsis, sizeof ellipsis);
    return text;
}

char *reply_clean (char *text, const pcfg_entity_t *entity, size_t limit, size_t max_bytes)
{
    if (max_bytes < 4)
        max_bytes = 4;  //  room for the ellipsis
    s_drop_reasoning (text);
    s_trim (text);
    s_drop_own_name (text, entity->name);
    if (strcmp (entity->name, entity->id))
        s_drop_own_name (text, entity->id);
    return s_cut (text, limit, max_bytes);
}
