/*  broker_ctl - the broker's admin commands and counters. See broker_ctl.h. */
#include "broker/broker_ctl.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <inttypes.h>
#include <string.h>

size_t broker_stats_values (bctl_t *ctx, proto_num_t *values, size_t max)
{
    sched_counts_t sc;
    sched_counts (ctx->sched, &sc);
    const bjobs_counters_t *c = bjobs_counters (ctx->jobs);
    const bworkers_counters_t *w = bworkers_counters (ctx->workers);
    const proto_num_t all[] = {
        {"submitted", (double) c->submitted},
        {"accepted", (double) c->accepted},
        {"duplicates", (double) c->duplicates},
        {"rejected", (double) c->rejected},
        {"busy", (double) c->busy},
        {"dispatched", (double) c->dispatched},
        {"retried", (double) c->retried},
        {"reclaimed", (double) c->reclaimed},
        {"crashes", (double) c->crashes},
        {"dead", (double) c->dead},
        {"expired", (double) c->expired},
        {"skipped", (double) c->skipped},
        {"returned", (double) c->returned},
        {"committed", (double) c->committed},
        {"posted", (double) c->posted},
        {"duplicate_posts", (double) c->duplicate_posts},
        {"stale_results", (double) c->stale_results},
        {"sink_expired", (double) c->sink_expired},
        {"lost_workers", (double) w->lost_workers},
        {"cancelled", (double) w->cancelled},
        {"verdicts_pushed", (double) w->pushed},
        {"malformed", (double) ctx->counters->malformed},
        {"refused", (double) (ctx->counters->refused + w->refused)},
        {"quarantined", (double) ctx->counters->quarantined},
        {"queued", (double) sc.queued},
        {"delayed", (double) sc.delayed},
        {"in_flight", (double) bjobs_in_state (ctx->jobs, JOB_DISPATCHED)},
        {"handed_off", (double) bjobs_in_state (ctx->jobs, JOB_HANDED_OFF)},
        {"awaiting_post", (double) bjobs_in_state (ctx->jobs, JOB_COMMITTED)},
        {"jobs", (double) bjobs_count (ctx->jobs)},
        {"workers", (double) bworkers_count (ctx->workers)},
        {"credit", (double) bworkers_credit (ctx->workers)},
        {"dlq", (double) bdlq_size (ctx->dlq)},
        {"chats", (double) sched_chat_count (ctx->sched)},
        {"pairs", (double) sched_flow_count (ctx->sched)},
        {"paused", sched_paused (ctx->sched, -1) ? 1.0 : 0.0},
    };
    size_t n = sizeof all / sizeof all[0];
    if (n > max)
        n = max;
    memcpy (values, all, n * sizeof (proto_num_t));
    return n;
}

json_t *broker_stats_json (bctl_t *ctx)
{
    proto_num_t values[64];
    size_t count = broker_stats_values (ctx, values, 64);
    json_t *out = json_object ();
    for (size_t i = 0; i < count; i++)
        json_object_set_new (out, values[i].key, json_integer ((json_int_t) values[i].value));
    return out;
}

static json_t *s_entities_json (bctl_t *ctx)
{
    json_t *list = json_array ();
    for (size_t i = 0; i < ctx->config->entities.count; i++) {
        size_t queued, in_flight;
        sched_entity_counts (ctx->sched, (int) i, &queued, &in_flight);
        json_array_append_new (list, json_pack ("{s:s, s:I, s:I, s:b}", "id",
                                                pcfg_entity (ctx->config, i)->id, "queued",
                                                (json_int_t) queued, "in_flight",
                                                (json_int_t) in_flight, "paused",
                                                sched_paused (ctx->sched, (int) i)));
    }
    return list;
}

static char *s_error (int *status, const char *fmt, const char *arg)
{
    char text[512];
    snprintf (text, sizeof text, fmt, arg ? arg : "");
    json_t *err = json_pack ("{s:s}", "error", text);
    char *body = json_dumps (err, JSON_COMPACT);
    json_decref (err);
    *status = 1;
    return body;
}

//  Retries or purges the dead letters selected by `which` ("all" or an id).
//  A retry leaves "maybe posted" letters alone unless `force`: retrying
//  them could post a reply twice.
static json_t *s_dlq_apply (bctl_t *ctx, const char *which, bool retry, bool force, int *status)
{
    bool all = streq (which, "all");
    uint64_t id = all ? 0 : strtoull (which, NULL, 10);
    //  Pick first, then act: acting must not disturb the walk.
    size_t count = bdlq_size (ctx->dlq), picked = 0, skipped = 0, done = 0;
    bdead_t **chosen = pcalloc (count + 1, sizeof (bdead_t *));
    for (bdead_t *d = bdlq_first (ctx->dlq); d; d = bdlq_next (ctx->dlq))
        if (all || d->id == id) {
            if (retry && d->maybe_posted && !force)
                skipped++;
            else
                chosen[picked++] = d;
        }
    for (size_t i = 0; i < picked; i++) {
        if (retry)
            bjobs_requeue_dead (ctx->jobs, chosen[i], ctx->now);
        bdlq_remove (ctx->dlq, chosen[i]);
        done++;
    }
    free (chosen);
    if (!all && done == 0) {
        *status = 1;
        return json_pack ("{s:s}", "error",
                          skipped ? "that dead letter may have been posted already; retry it with force"
                                  : "no dead letter with that id");
    }
    if (retry)
        return json_pack ("{s:I, s:I}", "retried", (json_int_t) done, "skipped_maybe_posted",
                          (json_int_t) skipped);
    return json_pack ("{s:I}", "purged", (json_int_t) done);
}

char *broker_ctl_handle (bctl_t *ctx, const proto_ctl_t *ctl, int *status)
{
    *status = 0;
    const char *cmd = ctl->command;
    const char *arg = ctl->arg_count > 0 ? ctl->args[0] : NULL;
    json_t *out = NULL;
    if (streq (cmd, "stats"))
        out = broker_stats_json (ctx);
    else if (streq (cmd, "workers"))
        out = bworkers_json (ctx->workers, ctx->now);
    else if (streq (cmd, "entities"))
        out = s_entities_json (ctx);
    else if (streq (cmd, "pause") || streq (cmd, "resume")) {
        bool pause = streq (cmd, "pause");
        if (!arg)
            return s_error (status, "%s needs an entity id or \"all\"", cmd);
        int entity = streq (arg, "all") ? -1 : pcfg_entity_index (ctx->config, arg);
        if (entity < 0 && !streq (arg, "all"))
            return s_error (status, "no entity \"%s\"", arg);
        bjobs_set_paused (ctx->jobs, entity, pause, ctx->now);
        plog_info ("%s %s", pause ? "paused" : "resumed", arg);
        out = json_pack ("{s:s, s:b}", "entity", arg, "paused", pause);
    }
    else if (streq (cmd, "dlq-list")) {
        size_t limit = arg ? strtoul (arg, NULL, 10) : 100;
        json_t *list = json_array ();
        for (bdead_t *d = bdlq_first (ctx->dlq); d && json_array_size (list) < limit;
             d = bdlq_next (ctx->dlq))
            json_array_append_new (list, bdlq_entry_json (d));
        out = json_pack ("{s:I, s:o}", "total", (json_int_t) bdlq_size (ctx->dlq), "items", list);
    }
    else if (streq (cmd, "dlq-retry") || streq (cmd, "dlq-purge")) {
        if (!arg)
            return s_error (status, "%s needs a dead letter id or \"all\"", cmd);
        bool force = ctl->arg_count > 1 && streq (ctl->args[1], "force");
        out = s_dlq_apply (ctx, arg, streq (cmd, "dlq-retry"), force, status);
    }
    else
        return s_error (status, "unknown command \"%s\"", cmd);
    char *body = json_dumps (out, JSON_COMPACT);
    json_decref (out);
    return body;
}
