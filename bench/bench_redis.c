/*  bench_redis - a pipelined Redis job-queue producer or consumer, for bench/run.

    Usage: bench_redis produce PORT JOBS SIZE [WINDOW]
           bench_redis consume PORT JOBS reliable|simple [WINDOW]

    The producer LPUSHes JOBS jobs of SIZE bytes onto the list "jobs". The
    consumer takes them the way Redis job queues do:
      reliable  BLMOVE jobs processing RIGHT LEFT 0, then LREM processing -1 <job>
                when done: Redis's "reliable queue" pattern (the LMOVE
                documentation), where a job a worker took but never finished
                stays in "processing" - put -> reserve -> delete, as beanstalkd
                and Parley do;
      simple    BRPOP jobs 0: the job leaves Redis when it is taken (lost if the
                worker dies with it).
    Both keep up to WINDOW commands in flight on one connection (default
    256). The consumer prints "ready" once connected, then one JSON line
    when all JOBS are done: the CLOCK_MONOTONIC times of the first and the
    last completion (LREM acknowledged, or BRPOP answered).
*/
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static redisContext *s_connect (int port)
{
    redisContext *c = redisConnect ("127.0.0.1", port);
    if (!c || c->err) {
        fprintf (stderr, "bench_redis: connect to port %d: %s\n", port, c ? c->errstr : "no memory");
        exit (1);
    }
    return c;
}

//  The next reply; hiredis writes the commands appended so far only when
//  none is waiting, so the pipeline streams.
static redisReply *s_reply (redisContext *c)
{
    void *reply = NULL;
    if (redisGetReply (c, &reply) != REDIS_OK || !reply) {
        fprintf (stderr, "bench_redis: %s\n", c->errstr);
        exit (1);
    }
    redisReply *r = reply;
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf (stderr, "bench_redis: %s\n", r->str);
        exit (1);
    }
    return r;
}

static int s_produce (int port, long jobs, long size, long window)
{
    redisContext *c = s_connect (port);
    char *body = malloc ((size_t) size);
    memset (body, 'x', (size_t) size);
    long sent = 0, acked = 0;
    while (acked < jobs) {
        while (sent < jobs && sent - acked < window) {
            //  Each job differs (its number first), so LREM finds the one it means.
            char tag[24];
            int t = snprintf (tag, sizeof tag, "%ld ", sent);
            memcpy (body, tag, (size_t) (t < size ? t : size));
            redisAppendCommand (c, "LPUSH jobs %b", body, (size_t) size);
            sent++;
        }
        freeReplyObject (s_reply (c));
        acked++;
    }
    free (body);
    redisFree (c);
    return 0;
}

static int s_consume (int port, long jobs, int reliable, long window)
{
    redisContext *c = s_connect (port);
    printf ("ready\n");
    fflush (stdout);
    //  Never more takes than jobs: a blocked BLMOVE with none left would
    //  hold up the LREMs behind it on the connection.
    long takes = 0, pending = 0, done = 0;
    int64_t first = 0, last = 0;
    while (done < jobs) {
        while (takes < jobs && pending < window) {
            if (reliable)
                redisAppendCommand (c, "BLMOVE jobs processing RIGHT LEFT 0");
            else
                redisAppendCommand (c, "BRPOP jobs 0");
            takes++;
            pending++;
        }
        redisReply *r = s_reply (c);
        pending--;
        int finished = 0;
        if (r->type == REDIS_REPLY_STRING) {         //  BLMOVE: the job, now in "processing"
            redisAppendCommand (c, "LREM processing -1 %b", r->str, r->len);
            pending++;
        }
        else if (r->type == REDIS_REPLY_INTEGER) {   //  LREM: removed
            if (r->integer != 1) {
                fprintf (stderr, "bench_redis: LREM removed %lld\n", r->integer);
                exit (1);
            }
            finished = 1;
        }
        else if (r->type == REDIS_REPLY_ARRAY)       //  BRPOP: [list, job]
            finished = 1;
        freeReplyObject (r);
        if (finished) {
            last = s_now_ns ();
            if (done++ == 0)
                first = last;
        }
    }
    printf ("{\"jobs\": %ld, \"first_ns\": %lld, \"last_ns\": %lld}\n", jobs, (long long) first,
            (long long) last);
    redisFree (c);
    return 0;
}

int main (int argc, char *argv[])
{
    if (argc >= 5 && strcmp (argv[1], "produce") == 0)
        return s_produce (atoi (argv[2]), atol (argv[3]), atol (argv[4]),
                          argc > 5 ? atol (argv[5]) : 256);
    if (argc >= 5 && strcmp (argv[1], "consume") == 0)
        return s_consume (atoi (argv[2]), atol (argv[3]), strcmp (argv[4], "reliable") == 0,
                          argc > 5 ? atol (argv[5]) : 256);
    fprintf (stderr, "usage: bench_redis produce PORT JOBS SIZE [WINDOW]\n"
                     "       bench_redis consume PORT JOBS reliable|simple [WINDOW]\n");
    return 2;
}
