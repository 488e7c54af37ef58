/*  dest_jsonl - the JSON-lines file destination: one JSON object per reply,
    appended to a file opened for appending.

    The lines of one turn are written together, with a single write(), at
    the end of the turn's posting (dest_t.flush): a write() per line was
    the biggest system cost of a sink posting tens of thousands of replies
    a second. Each reply is reported done only once its line is written,
    so it still counts as posted only when it is in the file. A write that
    fails part way (a full disk, a file size limit) is cut back to the last
    whole line before anything else is written, so the next reply never
    lands on the end of a torn line; the whole lines before it are posted,
    the rest handed back as retries; a line torn by a crash is cut off when
    the sink starts again. (The sink is the file's only writer.)
    Its lines carry msg_key and entity, which lets the sink check after a
    crash whether a post it was making went out.
*/
#include "sink/dest.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/ptext.h"
#include "store/pfile.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

//  A line waiting for the flush: its reply and where it ends in the buffer.
typedef struct {
    void *tag;
    int64_t now;
    size_t end;
} s_line_t;

typedef struct {
    int fd;
    zhashx_t *index;    //  "entity \x1f msg_key" of lines in the file, built on demand
    off_t torn_at;      //  where a failed write began, if it could not be cut off yet; or -1
    char *buf;          //  the lines waiting for the flush, reused turn after turn
    size_t len, cap;
    s_line_t *lines;
    size_t line_count, line_capacity;
} jsonl_t;

//  --- the line, as jansson would write it ---------------------------------------------
//
//  A line is what json_dumps (JSON_COMPACT | JSON_ENSURE_ASCII) makes of the
//  object, keys in this order. Building a jansson object per post cost more
//  than the rest of the write: the line is put together here, and jansson
//  itself encodes any string with text beyond ASCII.

static void s_put (jsonl_t *j, const char *data, size_t len)
{
    if (j->len + len > j->cap)
        j->buf = pgrow (j->buf, &j->cap, j->len + len, 1);
    memcpy (j->buf + j->len, data, len);
    j->len += len;
}

//  Appends `s` as a JSON string; -1 if it is not valid UTF-8 (or NULL).
//  ASCII is escaped here as jansson escapes it (" \\ \b \f \n \r \t with a
//  backslash, other controls as \u00XX); a string with anything beyond
//  ASCII goes to jansson whole, which checks it and writes \uXXXX escapes.
static int s_put_str (jsonl_t *j, const char *s)
{
    if (!s)
        return -1;
    size_t n = 0;
    while ((unsigned char) s[n] < 0x80 && s[n])
        n++;
    if (s[n]) {
        json_t *str = json_string (s);
        char *text =
            str ? json_dumps (str, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref (str);
        if (!text)
            return -1;
        s_put (j, text, strlen (text));
        free (text);
        return 0;
    }
    static const char hex[] = "0123456789ABCDEF";
    s_put (j, "\"", 1);
    const char *run = s;
    for (const char *c = s; *c; c++) {
        unsigned char ch = (unsigned char) *c;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        s_put (j, run, (size_t) (c - run));
        run = c + 1;
        char esc[6] = {'\\', (char) ch, 0};
        size_t len = 2;
        switch (ch) {
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '"':
        case '\\': break;
        default:
            memcpy (esc + 1, "u00", 3);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            len = 6;
            break;
        }
        s_put (j, esc, len);
    }
    s_put (j, run, (size_t) (s + n - run));
    s_put (j, "\"", 1);
    return 0;
}

static void s_put_int (jsonl_t *j, int64_t v)
{
    char digits[24], *at = digits + sizeof digits;
    uint64_t u = v < 0 ? 0 - (uint64_t) v : (uint64_t) v;
    do
        *--at = (char) ('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--at = '-';
    s_put (j, at, (size_t) (digits + sizeof digits - at));
}

//  Appends the line of a post, with its newline; -1 (nothing appended) if
//  a string is not valid UTF-8.
static int s_put_line (jsonl_t *j, const dest_post_t *post, const char *text, int64_t now)
{
    const struct {
        const char *key;
        const char *value;
    } strings[] = {{"{\"msg_key\":", post->msg_key},   {",\"entity\":", post->entity_id},
                   {",\"chat\":", post->chat},         {",\"source\":", post->source},
                   {",\"chat_ref\":", post->chat_ref}, {",\"reply_to\":", post->msg_ref},
                   {",\"author\":", post->author},     {",\"text\":", text}};
    const struct {
        const char *key;
        int64_t value;
    } numbers[] = {{",\"created_ms\":", post->created_ms},
                   {",\"posted_ms\":", now},
                   {",\"job_id\":", (int64_t) post->job_id},
                   {",\"attempt\":", (int64_t) post->attempt}};
    size_t start = j->len;
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        s_put (j, strings[i].key, strlen (strings[i].key));
        if (s_put_str (j, strings[i].value)) {
            j->len = start;
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        s_put (j, numbers[i].key, strlen (numbers[i].key));
        s_put_int (j, numbers[i].value);
    }
    s_put (j, "}\n", 2);
    return 0;
}

//  --- posting -----------------------------------------------------------------------------

static int s_jsonl_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    jsonl_t *j = self->state;
    //  A local file has no platform limit; maxLength, if set, trims.
    char *trimmed = ptext_trim (post->text, (size_t) self->config->max_length, PTEXT_CODEPOINTS);
    int rc = s_put_line (j, post, trimmed, now);
    free (trimmed);
    if (rc) {
        self->done (self->ctx, tag, DEST_FAIL, "reply could not be written as JSON", 0);
        return 0;
    }
    j->lines = pgrow (j->lines, &j->line_capacity, j->line_count + 1, sizeof (s_line_t));
    j->lines[j->line_count++] = (s_line_t) {tag, now, j->len};
    return 0;
}

//  Writes the turn's lines, then reports each: written whole, or to retry.
static void s_jsonl_flush (dest_t *self)
{
    jsonl_t *j = self->state;
    if (!j->line_count)
        return;
    size_t done = 0;
    int error = 0;
    char why[600] = "";
    //  Part of a line from a failed write is still there: it goes first.
    if (j->torn_at >= 0) {
        if (ftruncate (j->fd, j->torn_at) == 0)
            j->torn_at = -1;
        else
            snprintf (why, sizeof why, "cannot cut a torn line off %s: %s", self->config->path,
                      strerror (errno));
    }
    if (j->torn_at < 0 && pfile_write_all (j->fd, j->buf, j->len, PFILE_APPEND, &done)) {
        error = errno;
        //  The file is appended to by this sink alone: what was written ends
        //  it. A line written in part is cut back. (-1 for a pipe: nothing
        //  to cut back there.)
        size_t whole = 0;
        for (size_t i = 0; i < j->line_count && j->lines[i].end <= done; i++)
            whole = j->lines[i].end;
        off_t end = lseek (j->fd, 0, SEEK_END);
        if (done > whole && end >= 0) {
            off_t cut = end - (off_t) (done - whole);
            if (ftruncate (j->fd, cut) != 0)
                j->torn_at = cut;
        }
        done = whole;
        snprintf (why, sizeof why, "write to %s failed: %s%s", self->config->path,
                  strerror (error),
                  j->torn_at >= 0 ? " (the partial line is cut off before the next write)" : "");
    }
    //  The reports may post again: they find an empty turn.
    s_line_t *lines = j->lines;
    size_t count = j->line_count, capacity = j->line_capacity;
    j->lines = NULL;
    j->line_count = j->line_capacity = j->len = 0;
    for (size_t i = 0; i < count; i++) {
        if (lines[i].end <= done) {
            //  The post is written: that is when it counts.
            if (self->first)
                self->first (self->ctx, lines[i].tag, lines[i].now);
            self->done (self->ctx, lines[i].tag, DEST_OK, NULL, 0);
        }
        else
            self->done (self->ctx, lines[i].tag, DEST_RETRY, why, 0);
    }
    if (!j->lines) {
        j->lines = lines;
        j->line_capacity = capacity;
    }
    else
        free (lines);
}

//  --- after a crash ---------------------------------------------------------------------

static int s_jsonl_was_posted (dest_t *self, const char *msg_key, const char *entity_id)
{
    jsonl_t *j = self->state;
    if (!j->index) {
        j->index = zhashx_new ();
        FILE *f = fopen (self->config->path, "r");
        if (!f)
            return -1;
        char *line = NULL;
        size_t cap = 0;
        while (getline (&line, &cap, f) > 0) {
            json_t *obj = json_loads (line, 0, NULL);   //  a torn last line is simply skipped
            const char *k = json_string_value (json_object_get (obj, "msg_key"));
            const char *e = json_string_value (json_object_get (obj, "entity"));
            if (k && e) {
                char key[1200];
                snprintf (key, sizeof key, "%s\x1f%s", e, k);
                zhashx_insert (j->index, key, (void *) 1);
            }
            json_decref (obj);
        }
        free (line);
        fclose (f);
    }
    char key[1200];
    snprintf (key, sizeof key, "%s\x1f%s", entity_id, msg_key);
    return zhashx_lookup (j->index, key) ? 1 : 0;
}

static void s_jsonl_destroy (dest_t *self)
{
    jsonl_t *j = self->state;
    //  Lines not flushed were never reported posted: the sink asks again after a restart.
    close (j->fd);
    zhashx_destroy (&j->index);
    free (j->buf);
    free (j->lines);
    free (j);
}

//  A sink killed in the middle of a turn's write() can leave its last line
//  torn: the kernel stops a long write at a page when the process is
//  killed. That reply was never reported posted (the sink asks again after
//  its restart), so the torn line is cut off here, before anything is
//  appended onto it. Regular files only: a pipe has no tail to cut.
static void s_cut_torn_tail (dest_t *self, int fd)
{
    struct stat st;
    if (fstat (fd, &st) || !S_ISREG (st.st_mode) || st.st_size == 0)
        return;
    int rd = open (self->config->path, O_RDONLY | O_CLOEXEC);
    if (rd < 0)
        return;
    char buf[4096];
    off_t pos = st.st_size, keep = 0;
    bool found = false;
    while (pos > 0 && !found) {
        size_t n = pos >= (off_t) sizeof buf ? sizeof buf : (size_t) pos;
        pos -= (off_t) n;
        if (pfile_read_all (rd, buf, n, (uint64_t) pos))
            break;
        for (size_t k = n; k > 0 && !found; k--)
            if (buf[k - 1] == '\n') {
                keep = pos + (off_t) k;
                found = true;
            }
    }
    close (rd);
    if ((found || pos == 0) && keep < st.st_size) {
        if (ftruncate (fd, keep) == 0)
            plog_warn ("destination %s: cut a torn last line off %s (%lld bytes; its reply was "
                       "not reported posted)",
                       self->config->name, self->config->path, (long long) (st.st_size - keep));
        else
            plog_error ("destination %s: cannot cut a torn last line off %s: %s",
                        self->config->name, self->config->path, strerror (errno));
    }
}

int dest_jsonl_init (dest_t *self)
{
    if (!*self->config->path) {
        plog_error ("destination %s: jsonl needs a \"path\"", self->config->name);
        return -1;
    }
    jsonl_t *j = pcalloc (1, sizeof *j);
    j->torn_at = -1;
    j->fd = open (self->config->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (j->fd < 0) {
        plog_error ("destination %s: cannot open %s: %s", self->config->name, self->config->path,
                    strerror (errno));
        free (j);
        return -1;
    }
    s_cut_torn_tail (self, j->fd);
    self->state = j;
    self->post = s_jsonl_post;
    self->flush = s_jsonl_flush;
    self->io.pollitems = dest_no_pollitems;
    self->io.process = dest_no_process;
    self->io.wakeup = dest_no_wakeup;
    self->was_posted = s_jsonl_was_posted;
    self->destroy = s_jsonl_destroy;
    return 0;
}
