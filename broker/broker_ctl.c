/*  broker_ctl - the broker's admin commands and counters.

    Commands (CTL.command, CTL.args) and their JSON answers:
        stats                       counters and gauges
        workers                     connected workers
        entities                    per entity: queued, in flight, paused
        pause ENTITY|all            stop dispatching for an entity (or all)
        resume ENTITY|all
        dlq-list [LIMIT]            dead letters, oldest first
        dlq-retry ID|all            queue dead letters again
        dlq-purge ID|all            delete dead letters
*/
#include "broker/broker_int.h"
#include "common/plog.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void broker_stats_values (broker_t *self, proto_num_t *values, size_t *count, size_t max)
{
    sched_counts_t sc;
    sched_counts (self->sched, &sc);
    size_t handed_off = self->state_count[JOB_HANDED_OFF];
    size_t committed = self->state_count[JOB_COMMITTED];
    size_t credit = 0;
    for (bworker_t *w = zhashx_first (self->workers); w; w = zhashx_next (self->workers))
        credit += w->credit;
    const bcounters_t *c = &self->counters;
    const proto_num_t all[] = {
        {"submitted", (double) c->submitted},
        {"accepted", (double) c->accepted},
        {"duplicates", (double) c->duplicates},
        {"rejected", (double) c->rejected},
        {"dropped", (double) c->dropped},
        {"dispatched", (double) c->dispatched},
        {"retried", (double) c->retried},
        {"dead", (double) c->dead},
        {"expired", (double) c->expired},
        {"skipped", (double) c->skipped},
        {"returned", (double) c->returned},
        {"committed", (double) c->committed},
        {"posted", (double) c->posted},
        {"duplicate_posts", (double) c->duplicate_posts},
        {"stale_results", (double) c->stale_results},
        {"lost_workers", (double) c->lost_workers},
        {"malformed", (double) c->malformed},
        {"queued", (double) sc.queued},
        {"delayed", (double) sc.delayed},
        {"in_flight", (double) sc.in_flight},
        {"handed_off", (double) handed_off},
        {"awaiting_post", (double) committed},
        {"jobs", (double) zhashx_size (self->jobs)},
        {"workers", (double) zhashx_size (self->workers)},
        {"credit", (double) credit},
        {"dlq", (double) zlistx_size (self->dead)},
        {"chats", (double) sched_chat_count (self->sched)},
        {"paused", sched_paused (self->sched, -1) ? 1.0 : 0.0},
    };
    size_t n = sizeof all / sizeof all[0];
    if (n > max)
        n = max;
    memcpy (values, all, n * sizeof (proto_num_t));
    *count = n;
}

json_t *broker_stats_json (broker_t *self)
{
    proto_num_t values[64];
    size_t count = 0;
    broker_stats_values (self, values, &count, 64);
    json_t *out = json_object ();
    for (size_t i = 0; i < count; i++)
        json_object_set_new (out, values[i].key, json_integer ((json_int_t) values[i].value));
    return out;
}

static json_t *s_workers_json (broker_t *self)
{
    json_t *list = json_array ();
    for (bworker_t *w = zhashx_first (self->workers); w; w = zhashx_next (self->workers)) {
        json_t *models = json_array ();
        for (size_t i = 0; i < w->model_count; i++)
            json_array_append_new (models, json_string (w->models[i]));
        json_array_append_new (
            list, json_pack ("{s:s, s:s, s:I, s:i, s:i, s:i, s:I, s:b, s:I, s:o}", "id", w->id,
                             "host", w->host, "pid", (json_int_t) w->pid, "capacity", w->capacity,
                             "credit", w->credit, "jobs", (int) w->job_count, "dispatched",
                             (json_int_t) w->dispatched, "draining", w->draining, "idle_ms",
                             (json_int_t) (self->now - w->last_seen), "models", models));
    }
    return list;
}

static json_t *s_entities_json (broker_t *self)
{
    json_t *list = json_array ();
    for (size_t i = 0; i < self->config->entities.count; i++) {
        size_t queued, in_flight;
        sched_entity_counts (self->sched, (int) i, &queued, &in_flight);
        json_array_append_new (list, json_pack ("{s:s, s:I, s:I, s:b}", "id",
                                                pcfg_entity (self->config, i)->id, "queued",
                                                (json_int_t) queued, "in_flight",
                                                (json_int_t) in_flight, "paused",
                                                sched_paused (self->sched, (int) i)));
    }
    return list;
}

static json_t *s_dead_json (bdead_t *d)
{
    return json_pack ("{s:I, s:s, s:s, s:s, s:i, s:I, s:I, s:i, s:s, s:s}", "id", (json_int_t) d->id,
                      "msg_key", d->msg_key, "entity", d->entity, "chat", d->chat, "priority",
                      d->priority, "created_ms", (json_int_t) d->created_ms, "dead_at",
                      (json_int_t) d->dead_at, "attempts", d->attempts, "reason", d->reason,
                      "history", d->history);
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

//  Applies `action` to the dead letters selected by `which` ("all" or an id).
static json_t *s_dlq_apply (broker_t *self, const char *which, bool retry, int *status)
{
    bool all = streq (which, "all");
    uint64_t id = all ? 0 : strtoull (which, NULL, 10);
    //  Pick first, then act: requeueing and deleting must not disturb the walk.
    zlistx_t *picked = zlistx_new ();
    for (bdead_t *d = zlistx_first (self->dead); d; d = zlistx_next (self->dead))
        if (all || d->id == id)
            zlistx_add_end (picked, d);
    size_t done = 0;
    for (bdead_t *d = zlistx_first (picked); d; d = zlistx_next (picked)) {
        if (retry)
            broker_requeue_dead (self, d);
        broker_forget_dead (self, d);
        zlistx_delete (self->dead, zlistx_find (self->dead, d));
        done++;
    }
    zlistx_destroy (&picked);
    if (!all && done == 0) {
        *status = 1;
        return json_pack ("{s:s}", "error", "no dead letter with that id");
    }
    return json_pack ("{s:I}", retry ? "retried" : "purged", (json_int_t) done);
}

char *broker_ctl_handle (broker_t *self, const proto_ctl_t *ctl, int *status)
{
    *status = 0;
    const char *cmd = ctl->command;
    const char *arg = ctl->arg_count > 0 ? ctl->args[0] : NULL;
    json_t *out = NULL;
    if (streq (cmd, "stats"))
        out = broker_stats_json (self);
    else if (streq (cmd, "workers"))
        out = s_workers_json (self);
    else if (streq (cmd, "entities"))
        out = s_entities_json (self);
    else if (streq (cmd, "pause") || streq (cmd, "resume")) {
        bool pause = streq (cmd, "pause");
        if (!arg)
            return s_error (status, "%s needs an entity id or \"all\"", cmd);
        int entity = streq (arg, "all") ? -1 : pcfg_entity_index (self->config, arg);
        if (entity < 0 && !streq (arg, "all"))
            return s_error (status, "no entity \"%s\"", arg);
        broker_set_paused (self, entity, pause);
        plog_info ("%s %s", pause ? "paused" : "resumed", arg);
        out = json_pack ("{s:s, s:b}", "entity", arg, "paused", pause);
    }
    else if (streq (cmd, "dlq-list")) {
        size_t limit = arg ? strtoul (arg, NULL, 10) : 100;
        json_t *list = json_array ();
        for (bdead_t *d = zlistx_first (self->dead); d && json_array_size (list) < limit;
             d = zlistx_next (self->dead))
            json_array_append_new (list, s_dead_json (d));
        out = json_pack ("{s:I, s:o}", "total", (json_int_t) zlistx_size (self->dead), "items", list);
    }
    else if (streq (cmd, "dlq-retry") || streq (cmd, "dlq-purge")) {
        if (!arg)
            return s_error (status, "%s needs a dead letter id or \"all\"", cmd);
        out = s_dlq_apply (self, arg, streq (cmd, "dlq-retry"), status);
    }
    else
        return s_error (status, "unknown command \"%s\"", cmd);
    char *body = json_dumps (out, JSON_COMPACT);
    json_decref (out);
    return body;
}
