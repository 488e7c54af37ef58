/*  dest_local - destinations on this machine: stdout and a JSON-lines file.

    stdout prints one readable line per reply (the demo's output):
        [demo/lounge] Philosopher -> @quietfox3: Consider this, ...
    jsonl appends one JSON object per reply, written with a single write()
    to a file opened for appending, so a crash never leaves half a line in
    the middle of the file. A write that fails part way (a full disk, a
    file size limit) is cut back off the file before anything else is
    written, so the next reply never lands on the end of a torn line; the
    reply is handed back as a retry. (The sink is the file's only writer.)
    Its lines carry msg_key and entity, which lets the sink check after a
    crash whether a post it was making went out.
*/
#include "sink/dest.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/ptext.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dest_no_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    (void) io, (void) items, (void) max;
    return 0;
}

void dest_no_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) io, (void) now, (void) items, (void) count;
}

int64_t dest_no_wakeup (prt_io_t *io, int64_t now)
{
    (void) io, (void) now;
    return PRT_NEVER;
}

//  The post is written: that is when it counts.
static void s_written (dest_t *self, void *tag, int64_t now)
{
    if (self->first)
        self->first (self->ctx, tag, now);
    self->done (self->ctx, tag, DEST_OK, NULL, 0);
}

//  --- stdout ----------------------------------------------------------------------

//  Local destinations have no platform limit; maxLength, if set, trims.
static char *s_text (dest_t *self, const dest_post_t *post)
{
    return ptext_trim (post->text, (size_t) self->config->max_length, PTEXT_CODEPOINTS);
}

static int s_stdout_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    char *text = s_text (self, post);
    printf ("[%s] %s -> @%s: %s\n", post->chat, post->entity_name, post->author, text);
    fflush (stdout);
    free (text);
    s_written (self, tag, now);
    return 0;
}

static int s_stdout_was_posted (dest_t *self, const char *msg_key, const char *entity_id)
{
    (void) self, (void) msg_key, (void) entity_id;
    return -1;  //  a terminal keeps no record
}

static void s_stdout_destroy (dest_t *self)
{
    (void) self;
}

int dest_stdout_init (dest_t *self)
{
    self->post = s_stdout_post;
    self->io.pollitems = dest_no_pollitems;
    self->io.process = dest_no_process;
    self->io.wakeup = dest_no_wakeup;
    self->was_posted = s_stdout_was_posted;
    self->destroy = s_stdout_destroy;
    return 0;
}

//  --- jsonl ---------------------------------------------------------------------------

typedef struct {
    int fd;
    zhashx_t *index;    //  "entity \x1f msg_key" of lines in the file, built on demand
    off_t torn_at;      //  where a failed write began, if it could not be cut off yet; or -1
    char *line;         //  the line being built, reused post after post
    size_t len, cap;
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
        j->line = pgrow (j->line, &j->cap, j->len + len, 1);
    memcpy (j->line + j->len, data, len);
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

//  The line of a post, with its newline, in j->line; -1 if a string is not valid UTF-8.
static int s_jsonl_line (jsonl_t *j, const dest_post_t *post, const char *text, int64_t now)
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
    j->len = 0;
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        s_put (j, strings[i].key, strlen (strings[i].key));
        if (s_put_str (j, strings[i].value))
            return -1;
    }
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        s_put (j, numbers[i].key, strlen (numbers[i].key));
        s_put_int (j, numbers[i].value);
    }
    s_put (j, "}\n", 2);
    return 0;
}

//  Writes all of `data`, or fails with errno set; `*done` gets what was written.
static int s_write_all (int fd, const char *data, size_t len, size_t *done)
{
    *done = 0;
    while (*done < len) {
        ssize_t n = write (fd, data + *done, len - *done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        *done += (size_t) n;
    }
    return 0;
}

static int s_jsonl_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    jsonl_t *j = self->state;
    char *trimmed = s_text (self, post);
    int rc = s_jsonl_line (j, post, trimmed, now);
    free (trimmed);
    if (rc) {
        self->done (self->ctx, tag, DEST_FAIL, "reply could not be written as JSON", 0);
        return 0;
    }
    char why[600];
    //  Part of a line from a failed write is still there: it goes first.
    if (j->torn_at >= 0) {
        if (ftruncate (j->fd, j->torn_at) != 0) {
            snprintf (why, sizeof why, "cannot cut a torn line off %s: %s", self->config->path,
                      strerror (errno));
            self->done (self->ctx, tag, DEST_RETRY, why, 0);
            return 0;
        }
        j->torn_at = -1;
    }
    size_t done;
    rc = s_write_all (j->fd, j->line, j->len, &done);
    int error = errno;
    if (rc == 0) {
        s_written (self, tag, now);
        return 0;
    }
    //  The file is appended to by this sink alone: the line began `done`
    //  bytes before its end. (-1 for a pipe: nothing to cut back there.)
    off_t start = lseek (j->fd, 0, SEEK_END);
    if (start >= 0)
        start -= (off_t) done;
    if (start >= 0 && ftruncate (j->fd, start) != 0)
        j->torn_at = start;
    snprintf (why, sizeof why, "write to %s failed: %s%s", self->config->path, strerror (error),
              j->torn_at >= 0 ? " (the partial line is cut off before the next write)" : "");
    self->done (self->ctx, tag, DEST_RETRY, why, 0);
    return 0;
}

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
    close (j->fd);
    zhashx_destroy (&j->index);
    free (j->line);
    free (j);
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
    self->state = j;
    self->post = s_jsonl_post;
    self->io.pollitems = dest_no_pollitems;
    self->io.process = dest_no_process;
    self->io.wakeup = dest_no_wakeup;
    self->was_posted = s_jsonl_was_posted;
    self->destroy = s_jsonl_destroy;
    return 0;
}
