/*  plog - levelled logging for every Parley process.

    One line per event on stderr:
        2026-11-23T13:44:01.123Z INFO  broker: listening on tcp://127.0.0.1:7531
    The macros test the level before evaluating their arguments, so a debug
    line on a hot path costs one comparison when debug is off.
*/
#ifndef PLOG_H_INCLUDED
#define PLOG_H_INCLUDED

#include <stdarg.h>
#include <stdint.h>

typedef enum {
    PLOG_ERROR = 0,
    PLOG_WARN = 1,
    PLOG_INFO = 2,
    PLOG_DEBUG = 3,
    PLOG_TRACE = 4
} plog_level_t;

//  Current threshold; lines above it are not produced. Set by plog_init.
extern int plog_level;

//  Sets the component name shown on every line ("broker", "worker/w-1")
//  and the level threshold.
void plog_init (const char *component, int level);

//  Parses "error|warn|info|debug|trace"; returns -1 when unknown.
int plog_level_parse (const char *name);

void plog_write (int level, const char *format, ...) __attribute__ ((format (printf, 2, 3)));
void plog_vwrite (int level, const char *format, va_list args);

#define PLOG_AT(lvl, ...)                                                                          \
    do {                                                                                           \
        if ((lvl) <= plog_level)                                                                   \
            plog_write ((lvl), __VA_ARGS__);                                                       \
    } while (0)

#define plog_error(...) PLOG_AT (PLOG_ERROR, __VA_ARGS__)
#define plog_warn(...)  PLOG_AT (PLOG_WARN, __VA_ARGS__)
#define plog_info(...)  PLOG_AT (PLOG_INFO, __VA_ARGS__)
#define plog_debug(...) PLOG_AT (PLOG_DEBUG, __VA_ARGS__)
#define plog_trace(...) PLOG_AT (PLOG_TRACE, __VA_ARGS__)

//  A limiter for warnings that outside input can trigger at any rate
//  (malformed frames, bad source payloads): at most `burst` lines per
//  minute, then one summary of how many were suppressed.
typedef struct {
    int64_t window_start;   //  ms, start of the current minute
    int emitted;            //  lines written in this window
    int64_t suppressed;     //  lines dropped in this window
} plog_limiter_t;

//  Returns 1 when the caller may log now. Writes the suppression summary itself.
int plog_limiter_allow (plog_limiter_t *self, int burst);

#endif
