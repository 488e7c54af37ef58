/*  plog - levelled logging. See plog.h. */
#include "common/plog.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int plog_level = PLOG_INFO;
static char s_component[64] = "parley";

static const char *s_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"};

void plog_init (const char *component, int level)
{
    snprintf (s_component, sizeof s_component, "%s", component ? component : "parley");
    if (level < PLOG_ERROR)
        level = PLOG_ERROR;
    if (level > PLOG_TRACE)
        level = PLOG_TRACE;
    plog_level = level;
}

int plog_level_parse (const char *name)
{
    static const char *names[] = {"error", "warn", "info", "debug", "trace"};
    for (int i = 0; i < 5; i++)
        if (name && strcmp (name, names[i]) == 0)
            return i;
    return -1;
}

void plog_vwrite (int level, const char *format, va_list args)
{
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    char line[2048];
    int n = snprintf (line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s: ",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, (int) (tv.tv_usec / 1000),
                      s_names[level < 0 ? 0 : level > 4 ? 4 : level], s_component);
    int m = vsnprintf (line + n, sizeof line - (size_t) n - 1, format, args);
    size_t len = (size_t) n + (m < 0 ? 0 : (size_t) m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    //  One write per line so lines from concurrent processes do not interleave.
    fwrite (line, 1, len, stderr);
    fflush (stderr);
}

void plog_write (int level, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    plog_vwrite (level, format, args);
    va_end (args);
}

int plog_limiter_allow (plog_limiter_t *self, int burst)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now - self->window_start >= 60000) {
        if (self->suppressed > 0)
            plog_warn ("%lld similar warnings suppressed in the last minute",
                       (long long) self->suppressed);
        self->window_start = now;
        self->emitted = 0;
        self->suppressed = 0;
    }
    if (self->emitted < burst) {
        self->emitted++;
        return 1;
    }
    self->suppressed++;
    return 0;
}
