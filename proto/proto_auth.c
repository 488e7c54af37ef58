/*  proto_auth - the ZAP handler. See proto_auth.h.

    Why not czmq's zauth: zauth checks every CURVE client of the process
    against ONE certificate store, whatever socket it connects to, and has no
    per-domain rules. Parley must admit a worker key on the backend and the
    results socket but not on the frontend, an operator key on the frontend
    and the stats feed but not on the backend, and must say in every message
    which role sent it; hence this handler. It speaks ZAP (RFC 27) itself and
    leaves everything cryptographic to libzmq (the CURVE handshake) and czmq
    (zcert, zcertstore: reading certificates, looking keys up).

    Threads: the actor owns the allow-lists and answers ZAP requests and
    monitor events; proto_auth_check runs in the daemons' threads. What both
    touch (revoked keys, the routing-id table) is behind one mutex.
*/
#include "proto/proto_auth.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "proto/proto_keys.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define CONTROL_ENDPOINT "inproc://parley-auth-control"
#define REFUSALS_PER_MINUTE 10      //  log lines, then a count of the suppressed ones
#define ADMISSIONS_PER_MINUTE 30
#define WATCH_TIMEOUT_MS 2000

static const char *s_role_names[PROTO_ROLES] = {"poller", "worker", "sink", "operator"};
static const char *s_role_dirs[PROTO_ROLES] = {"pollers", "workers", "sinks", "operators"};

//  The domain rules: the only place they are written down in code.
#define ROLE_BIT(r) (1u << (r))
static const struct {
    const char *domain;
    unsigned roles;
} s_rules[] = {
    {"frontend",
     ROLE_BIT (PROTO_ROLE_POLLER) | ROLE_BIT (PROTO_ROLE_SINK) | ROLE_BIT (PROTO_ROLE_OPERATOR)},
    {"backend", ROLE_BIT (PROTO_ROLE_WORKER)},
    {"results", ROLE_BIT (PROTO_ROLE_WORKER)},
    {"stats", ROLE_BIT (PROTO_ROLE_OPERATOR)},
};

const char *proto_role_name (proto_role_t role)
{
    return role < PROTO_ROLES ? s_role_names[role] : "?";
}

const char *proto_role_dir (proto_role_t role)
{
    return role < PROTO_ROLES ? s_role_dirs[role] : "?";
}

static unsigned s_domain_roles (const char *domain)
{
    for (size_t i = 0; i < sizeof s_rules / sizeof s_rules[0]; i++)
        if (domain && streq (domain, s_rules[i].domain))
            return s_rules[i].roles;
    return 0;
}

bool proto_auth_user_is (const char *user, proto_role_t role)
{
    if (!user || role >= PROTO_ROLES)
        return false;
    size_t n = strlen (s_role_names[role]);
    return strncmp (user, s_role_names[role], n) == 0 && user[n] == '/';
}

bool proto_auth_admits (const char *domain, proto_role_t role)
{
    return role < PROTO_ROLES && (s_domain_roles (domain) & ROLE_BIT (role));
}

//  "workers" or "pollers, sinks, operators": the allow-lists of a domain.
static void s_roles_text (unsigned roles, char *buf, size_t len)
{
    buf[0] = 0;
    for (int r = 0; r < PROTO_ROLES; r++)
        if (roles & ROLE_BIT (r))
            snprintf (buf + strlen (buf), len - strlen (buf), "%s%s", *buf ? ", " : "",
                      s_role_dirs[r]);
}

//  --- state shared with the daemons' threads ----------------------------------------------

typedef struct {
    char *id;               //  "domain:hex routing id", the table's key
    char key[PROTO_KEY_TXT];    //  the public key that first used it
    void *handle;           //  in s_route_lru
} s_route_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static zactor_t *s_actor;            //  NULL when not running
static zhashx_t *s_routes;           //  id -> s_route_t
static zlistx_t *s_route_lru;        //  s_route_t, least recently seen first
static zhashx_t *s_revoked;          //  "role key" -> non-NULL: admitted once, since removed
static plog_limiter_t s_check_log;
static proto_auth_counts_t s_counts;
static size_t s_max_routes = 100000;
static int s_rescan_ms = 1000;

void proto_auth_counts (proto_auth_counts_t *counts)
{
    pthread_mutex_lock (&s_lock);
    *counts = s_counts;
    pthread_mutex_unlock (&s_lock);
}

//  Counts one event of the actor's.
static void s_count (uint64_t *counter)
{
    pthread_mutex_lock (&s_lock);
    (*counter)++;
    pthread_mutex_unlock (&s_lock);
}

void proto_auth_set_limits (size_t max_routes, int rescan_ms)
{
    s_max_routes = max_routes ? max_routes : 1;
    s_rescan_ms = rescan_ms > 0 ? rescan_ms : 1000;
}

bool proto_auth_running (void)
{
    pthread_mutex_lock (&s_lock);
    bool running = s_actor != NULL;
    pthread_mutex_unlock (&s_lock);
    return running;
}

static void s_route_free (void **item)
{
    s_route_t *route = *item;
    if (route) {
        free (route->id);
        free (route);
        *item = NULL;
    }
}

int proto_auth_check (const char *domain, const char *user, const char *key, const char *address,
                      const void *route, size_t route_size, char *why, size_t whylen)
{
    if (!address || !*address)
        address = "?";
    why[0] = 0;
    pthread_mutex_lock (&s_lock);
    if (!s_actor)
        snprintf (why, whylen, "the authenticator is not running");
    else if (!key || strlen (key) != PROTO_KEY_TXT - 1 || !user || !strchr (user, '/'))
        snprintf (why, whylen, "the connection was not admitted by Parley's authenticator");
    else {
        char revoked[PROTO_KEY_TXT + 32];
        snprintf (revoked, sizeof revoked, "%.*s %s", (int) (strchr (user, '/') - user), user, key);
        if (zhashx_lookup (s_revoked, revoked))
            snprintf (why, whylen, "its key was removed from the allow-list");
    }
    if (!*why && route_size > 0) {
        //  The routing id as text, so the table is an ordinary string hash.
        char id[64 + 2 * 256 + 1];
        size_t n = (size_t) snprintf (id, sizeof id, "%s:", domain);
        const uint8_t *bytes = route;
        for (size_t i = 0; i < route_size && n + 3 < sizeof id; i++)
            n += (size_t) snprintf (id + n, sizeof id - n, "%02x", bytes[i]);
        s_route_t *entry = zhashx_lookup (s_routes, id);
        if (entry && !streq (entry->key, key))
            snprintf (why, whylen, "its routing id is already used by another key (%.8s...): a"
                      " connection may not take over another client's route", entry->key);
        else if (entry)
            zlistx_move_end (s_route_lru, entry->handle);
        else {
            entry = pcalloc (1, sizeof *entry);
            entry->id = pstrdup (id);
            snprintf (entry->key, sizeof entry->key, "%s", key);
            zhashx_insert (s_routes, entry->id, entry);
            entry->handle = zlistx_add_end (s_route_lru, entry);
            while (zlistx_size (s_route_lru) > s_max_routes) {
                s_route_t *old = zlistx_first (s_route_lru);
                zlistx_detach (s_route_lru, old->handle);
                zhashx_delete (s_routes, old->id);   //  frees it
            }
        }
    }
    if (*why)
        s_counts.refused_messages++;
    if (*why && plog_limiter_allow (&s_check_log, REFUSALS_PER_MINUTE))
        plog_warn ("refused a message on %s from %s (%s, key %.8s...): %s", domain, address,
                   user && *user ? user : "unauthenticated", key && *key ? key : "none", why);
    pthread_mutex_unlock (&s_lock);
    return *why ? -1 : 0;
}

//  --- the actor ------------------------------------------------------------------------------

typedef struct {
    char *path;             //  allowDir/ROLEs
    zcertstore_t *store;
    uint64_t fingerprint;   //  of the directory tree, to notice any change at once
} s_list_t;

typedef struct {
    zsock_t *pair;          //  receives the socket monitor's events
    char *domain;
    char *endpoint;         //  the monitor's inproc endpoint
    void *handle;           //  in the actor's list
} s_monitor_t;

typedef struct {
    char *allow_dir;
    int status;             //  set by the actor before it signals: 0 serving, -1 failed
} s_args_t;

typedef struct {
    zsock_t *pipe;
    zsock_t *handler;       //  REP on the ZAP endpoint
    zsock_t *control;       //  REP for proto_auth_watch
    zpoller_t *poller;
    zlistx_t *monitors;     //  s_monitor_t
    s_list_t lists[PROTO_ROLES];
    zhashx_t *admitted;     //  "role key" -> non-NULL: every key admitted since start
    plog_limiter_t refused_log;     //  each kind of line has its own budget, so a client
    plog_limiter_t failed_log;      //  that keeps retrying cannot hide other refusals
    plog_limiter_t admitted_log;
    int64_t next_rescan;
} s_auth_t;

//  FNV-1a over the names, sizes, times and inodes of a directory tree: any
//  file added, removed, replaced or edited changes it (zcertstore notices
//  only changes of its file count, total size or newest whole-second mtime,
//  so a key replaced by another of the same size within a second would slip
//  through).
static uint64_t s_mix (uint64_t h, const void *data, size_t size)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < size; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

typedef struct {
    size_t keys;            //  certificates that load
    size_t secrets;         //  *_secret files (they do not belong here)
    size_t published;       //  documentation example keys (refused anyway)
} s_census_t;

static uint64_t s_walk (const char *path, int depth, s_census_t *census)
{
    uint64_t h = 1469598103934665603ULL;
    DIR *dir = opendir (path);
    if (!dir)
        return s_mix (h, "absent", 6);
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (streq (entry->d_name, ".") || streq (entry->d_name, ".."))
            continue;
        char child[4096];
        snprintf (child, sizeof child, "%s/%s", path, entry->d_name);
        struct stat st;
        if (stat (child, &st))
            continue;
        //  Order-independent: readdir's order may change between calls.
        uint64_t e = s_mix (1469598103934665603ULL, entry->d_name, strlen (entry->d_name));
        e = s_mix (e, &st.st_size, sizeof st.st_size);
        e = s_mix (e, &st.st_mtim, sizeof st.st_mtim);
        e = s_mix (e, &st.st_ino, sizeof st.st_ino);
        if (S_ISDIR (st.st_mode) && depth < 8) {
            uint64_t below = s_walk (child, depth + 1, census);
            e = s_mix (e, &below, sizeof below);
        }
        h ^= e * 0x9E3779B97F4A7C15ULL;
        if (census && S_ISREG (st.st_mode)) {
            size_t n = strlen (entry->d_name);
            if (n >= 7 && streq (entry->d_name + n - 7, "_secret"))
                census->secrets++;
            else {
                zcert_t *cert = zcert_load (child);
                if (cert) {
                    census->keys++;
                    if (proto_keys_published (zcert_public_txt (cert)))
                        census->published++;
                    zcert_destroy (&cert);
                }
            }
        }
    }
    closedir (dir);
    return h;
}

//  Reloads the allow-lists whose directories changed; marks admitted keys
//  that are gone as revoked (and revoked keys that are back as not).
static void s_refresh (s_auth_t *self, bool first)
{
    bool changed = false;
    for (int r = 0; r < PROTO_ROLES; r++) {
        s_list_t *list = &self->lists[r];
        uint64_t fp = s_walk (list->path, 0, NULL);
        if (!first && fp == list->fingerprint)
            continue;
        s_census_t census = {0};
        list->fingerprint = s_walk (list->path, 0, &census);
        zcertstore_destroy (&list->store);
        list->store = zcertstore_new (list->path);
        changed = true;
        if (first)
            plog_info ("allow-list %s: %zu key(s)", list->path, census.keys);
        else
            plog_info ("allow-list %s changed: now %zu key(s)", list->path, census.keys);
        if (census.secrets)
            plog_warn ("%s holds %zu secret key file(s) (*_secret): an allow-list needs only"
                       " public keys; move them away", list->path, census.secrets);
        if (census.published)
            plog_warn ("%s holds %zu example key(s) from ZeroMQ's documentation: they are always"
                       " refused", list->path, census.published);
    }
    if (!changed || first)
        return;
    pthread_mutex_lock (&s_lock);
    for (void *item = zhashx_first (self->admitted); item; item = zhashx_next (self->admitted)) {
        const char *id = zhashx_cursor (self->admitted);
        const char *key = strchr (id, ' ') + 1;
        int r = (int) (intptr_t) item - 1;
        bool present = zcertstore_lookup (self->lists[r].store, key) != NULL;
        bool revoked = zhashx_lookup (s_revoked, id) != NULL;
        if (!present && !revoked) {
            zhashx_insert (s_revoked, id, (void *) 1);
            plog_warn ("key %.8s... was removed from %s: its connections are refused from now on",
                       key, self->lists[r].path);
        }
        else if (present && revoked)
            zhashx_delete (s_revoked, id);
    }
    pthread_mutex_unlock (&s_lock);
}

//  ZAP metadata: one property, as ZMTP encodes it (name length, name,
//  32-bit big-endian value length, value).
static zframe_t *s_metadata (const char *name, const char *value)
{
    size_t nlen = strlen (name), vlen = strlen (value);
    zframe_t *frame = zframe_new (NULL, 1 + nlen + 4 + vlen);
    uint8_t *p = zframe_data (frame);
    *p++ = (uint8_t) nlen;
    memcpy (p, name, nlen);
    p += nlen;
    *p++ = (uint8_t) (vlen >> 24);
    *p++ = (uint8_t) (vlen >> 16);
    *p++ = (uint8_t) (vlen >> 8);
    *p++ = (uint8_t) vlen;
    memcpy (p, value, vlen);
    return frame;
}

//  The NAME of a User-Id: the certificate's "name", printable and short,
//  else the first 8 characters of the key.
static void s_user_name (zcert_t *cert, const char *key, char *buf, size_t len)
{
    const char *name = zcert_meta (cert, "name");
    if (!name || !*name) {
        snprintf (buf, len, "%.8s", key);
        return;
    }
    size_t n = 0;
    for (const char *p = name; *p && n + 1 < len && n < 64; p++)
        buf[n++] = (*p > 0x20 && *p < 0x7f && *p != '/') ? *p : '_';
    buf[n] = 0;
}

//  Decides one request. Fills status ("200"/"400"), text, user and key.
static void s_decide (s_auth_t *self, const char *domain, const char *mechanism,
                      zframe_t *credentials, char *status, char *text, size_t textlen,
                      char *user, size_t userlen, char key[PROTO_KEY_TXT])
{
    strcpy (status, "400");
    user[0] = key[0] = 0;
    unsigned roles = s_domain_roles (domain);
    if (!streq (mechanism, "CURVE")) {
        snprintf (text, textlen, "mechanism %s is not accepted: Parley needs CurveZMQ", mechanism);
        return;
    }
    if (!credentials || zframe_size (credentials) != 32) {
        snprintf (text, textlen, "no CURVE public key in the request");
        return;
    }
    zmq_z85_encode (key, zframe_data (credentials), 32);
    if (!roles) {
        snprintf (text, textlen, "key %.8s...: unknown domain \"%s\"", key, domain);
        return;
    }
    if (proto_keys_published (key)) {
        snprintf (text, textlen, "key %.8s... is an example key from ZeroMQ's documentation, whose"
                  " secret everyone knows", key);
        return;
    }
    //  The allow-lists are rescanned on every request, so a key file deleted
    //  a moment ago already refuses this connection.
    s_refresh (self, false);
    for (int r = 0; r < PROTO_ROLES; r++) {
        if (!(roles & ROLE_BIT (r)))
            continue;
        zcert_t *cert = zcertstore_lookup (self->lists[r].store, key);
        if (cert) {
            char name[80];
            s_user_name (cert, key, name, sizeof name);
            snprintf (user, userlen, "%s/%s", s_role_names[r], name);
            strcpy (status, "200");
            snprintf (text, textlen, "OK");
            char id[PROTO_KEY_TXT + 16];
            snprintf (id, sizeof id, "%s %s", s_role_names[r], key);
            zhashx_update (self->admitted, id, (void *) (intptr_t) (r + 1));
            pthread_mutex_lock (&s_lock);
            if (s_revoked)
                zhashx_delete (s_revoked, id);
            pthread_mutex_unlock (&s_lock);
            return;
        }
    }
    char allowed[64];
    s_roles_text (roles, allowed, sizeof allowed);
    for (int r = 0; r < PROTO_ROLES; r++)
        if (!(roles & ROLE_BIT (r)) && zcertstore_lookup (self->lists[r].store, key)) {
            snprintf (text, textlen, "key %.8s... is in the allow-list of %s, which may not use %s"
                      " (it admits %s)", key, s_role_dirs[r], domain, allowed);
            return;
        }
    snprintf (text, textlen, "key %.8s... is in no allow-list of %s (%s)", key, domain, allowed);
}

static void s_handle_zap (s_auth_t *self)
{
    zmsg_t *request = zmsg_recv (self->handler);
    if (!request)
        return;
    //  version, request id, domain, address, identity, mechanism, credentials
    char *version = zmsg_popstr (request);
    char *sequence = zmsg_popstr (request);
    char *domain = zmsg_popstr (request);
    char *address = zmsg_popstr (request);
    char *identity = zmsg_popstr (request);   //  the server socket's own id: of no use here
    char *mechanism = zmsg_popstr (request);
    zframe_t *credentials = zmsg_pop (request);
    char status[4], text[256], user[128], key[PROTO_KEY_TXT];
    if (!version || !streq (version, "1.0") || !mechanism) {
        strcpy (status, "500");
        snprintf (text, sizeof text, "malformed ZAP request");
        user[0] = key[0] = 0;
    }
    else
        s_decide (self, domain ? domain : "", mechanism, credentials, status, text, sizeof text,
                  user, sizeof user, key);
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, "1.0");
    zmsg_addstr (reply, sequence ? sequence : "");
    zmsg_addstr (reply, status);
    zmsg_addstr (reply, text);
    zmsg_addstr (reply, user);
    zframe_t *metadata = *key ? s_metadata (PROTO_AUTH_KEY_PROPERTY, key) : zframe_new_empty ();
    zmsg_append (reply, &metadata);
    zmsg_send (&reply, self->handler);
    s_count (streq (status, "200") ? &s_counts.admitted : &s_counts.refused);
    if (streq (status, "200")) {
        if (plog_limiter_allow (&self->admitted_log, ADMISSIONS_PER_MINUTE))
            plog_info ("admitted %s (key %.8s...) on %s from %s", user, key, domain, address);
    }
    else if (plog_limiter_allow (&self->refused_log, REFUSALS_PER_MINUTE))
        plog_warn ("refused a connection on %s from %s: %s", domain ? domain : "?",
                   address ? address : "?", text);
    free (version);
    free (sequence);
    free (domain);
    free (address);
    free (identity);
    free (mechanism);
    zframe_destroy (&credentials);
    zmsg_destroy (&request);
}

//  "WATCH endpoint domain": connect to a socket monitor's endpoint.
static void s_handle_control (s_auth_t *self)
{
    char *command = NULL, *endpoint = NULL, *domain = NULL;
    if (zstr_recvx (self->control, &command, &endpoint, &domain, NULL) < 0)
        return;
    const char *answer = "ERROR";
    if (command && endpoint && domain && streq (command, "WATCH")) {
        zsock_t *pair = zsock_new_pair (NULL);
        if (pair && zsock_connect (pair, "%s", endpoint) == 0) {
            s_monitor_t *monitor = pcalloc (1, sizeof *monitor);
            monitor->pair = pair;
            monitor->domain = pstrdup (domain);
            monitor->endpoint = pstrdup (endpoint);
            monitor->handle = zlistx_add_end (self->monitors, monitor);
            zpoller_add (self->poller, pair);
            answer = "OK";
        }
        else
            zsock_destroy (&pair);
    }
    zstr_send (self->control, answer);
    zstr_free (&command);
    zstr_free (&endpoint);
    zstr_free (&domain);
}

static void s_monitor_destroy (s_monitor_t **self_p)
{
    s_monitor_t *self = *self_p;
    if (self) {
        zsock_destroy (&self->pair);
        free (self->domain);
        free (self->endpoint);
        free (self);
        *self_p = NULL;
    }
}

static const char *s_handshake_failure (uint32_t code)
{
    switch (code) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "the client does not speak CurveZMQ (a plain-text client: is security off on"
               " its side?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE:
        return "its handshake cannot be decrypted (it was given another server key, or is not a"
               " CurveZMQ client)";
    default:
        return "its handshake failed";
    }
}

//  One event of a socket monitor: [event u16, value u32][endpoint].
static void s_handle_monitor (s_auth_t *self, s_monitor_t *monitor)
{
    zmsg_t *msg = zmsg_recv (monitor->pair);
    if (!msg)
        return;
    zframe_t *head = zmsg_first (msg);
    if (head && zframe_size (head) >= 6) {
        uint16_t event;
        uint32_t value;
        memcpy (&event, zframe_data (head), 2);
        memcpy (&value, zframe_data (head) + 2, 4);
        if (event == ZMQ_EVENT_MONITOR_STOPPED) {
            zpoller_remove (self->poller, monitor->pair);
            zlistx_detach (self->monitors, monitor->handle);
            s_monitor_destroy (&monitor);
        }
        else {
            s_count (&s_counts.failed_handshakes);
            if (plog_limiter_allow (&self->failed_log, REFUSALS_PER_MINUTE)) {
                char *where = zframe_strdup (zmsg_next (msg));
                if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
                    plog_warn ("refused a connection on %s (%s): %s (ZMTP error 0x%x)",
                               monitor->domain, where ? where : "?", s_handshake_failure (value),
                               value);
                else
                    plog_warn ("refused a connection on %s (%s): the client gave up during the"
                               " handshake (a plain-text client, or one given another server key,"
                               " may give up first)", monitor->domain, where ? where : "?");
                free (where);
            }
        }
    }
    zmsg_destroy (&msg);
}

static void s_auth_destroy (s_auth_t **self_p)
{
    s_auth_t *self = *self_p;
    if (!self)
        return;
    zpoller_destroy (&self->poller);
    if (self->monitors) {
        s_monitor_t *monitor = zlistx_first (self->monitors);
        while (monitor) {
            s_monitor_destroy (&monitor);
            monitor = zlistx_next (self->monitors);
        }
        zlistx_destroy (&self->monitors);
    }
    //  Unbound first: an inproc endpoint is only released when the socket is
    //  reaped, which may be after a new authenticator wants it.
    if (self->handler)
        zsock_unbind (self->handler, ZAP_ENDPOINT);
    if (self->control)
        zsock_unbind (self->control, CONTROL_ENDPOINT);
    zsock_destroy (&self->handler);
    zsock_destroy (&self->control);
    for (int r = 0; r < PROTO_ROLES; r++) {
        zcertstore_destroy (&self->lists[r].store);
        free (self->lists[r].path);
    }
    zhashx_destroy (&self->admitted);
    free (self);
    *self_p = NULL;
}

static void s_actor_fn (zsock_t *pipe, void *args_)
{
    s_args_t *args = args_;
    s_auth_t *self = pcalloc (1, sizeof *self);
    self->pipe = pipe;
    self->monitors = zlistx_new ();
    self->admitted = zhashx_new ();
    zhashx_set_destructor (self->admitted, NULL);
    zhashx_set_duplicator (self->admitted, NULL);
    for (int r = 0; r < PROTO_ROLES; r++) {
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", args->allow_dir, s_role_dirs[r]);
        self->lists[r].path = pstrdup (path);
    }
    self->handler = zsock_new (ZMQ_REP);
    if (!self->handler || zsock_bind (self->handler, ZAP_ENDPOINT) != 0) {
        plog_error ("cannot bind %s (another ZAP handler in this process?): %s", ZAP_ENDPOINT,
                    zmq_strerror (zmq_errno ()));
        s_auth_destroy (&self);
        args->status = -1;
        zsock_signal (pipe, 0);
        return;
    }
    self->control = zsock_new (ZMQ_REP);
    if (!self->control || zsock_bind (self->control, CONTROL_ENDPOINT) != 0) {
        plog_error ("cannot bind %s: %s", CONTROL_ENDPOINT, zmq_strerror (zmq_errno ()));
        s_auth_destroy (&self);
        args->status = -1;
        zsock_signal (pipe, 0);
        return;
    }
    s_refresh (self, true);
    self->poller = zpoller_new (pipe, self->handler, self->control, NULL);
    self->next_rescan = zclock_mono () + s_rescan_ms;
    args->status = 0;
    zsock_signal (pipe, 0);
    while (true) {
        int64_t wait = self->next_rescan - zclock_mono ();
        void *which = zpoller_wait (self->poller, wait > 0 ? (int) wait : 0);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
        }
        else if (which == self->handler)
            s_handle_zap (self);
        else if (which == self->control)
            s_handle_control (self);
        else if (which) {
            s_monitor_t *m = zlistx_first (self->monitors);
            for (; m; m = zlistx_next (self->monitors))
                if (m->pair == which) {
                    s_handle_monitor (self, m);
                    break;
                }
        }
        else if (zpoller_terminated (self->poller))
            break;
        //  Open connections of a revoked key are refused within one interval.
        if (zclock_mono () >= self->next_rescan) {
            s_refresh (self, false);
            self->next_rescan = zclock_mono () + s_rescan_ms;
        }
    }
    s_auth_destroy (&self);
}

//  --- start and stop ------------------------------------------------------------------------

int proto_auth_start (const pcfg_t *config)
{
    if (!config->security)
        return 0;
    if (proto_auth_running ()) {
        plog_error ("the authenticator is already running");
        return -1;
    }
    const char *dir = config->allow_dir;
    struct stat st;
    if (!dir || !*dir) {
        plog_error ("network.security is on but network.security.allowDir (PARLEY_ALLOW_DIR) is"
                    " not set: without allow-lists nobody could connect. Name the directory"
                    " holding pollers/, workers/, sinks/ and operators/");
        return -1;
    }
    if (stat (dir, &st) || !S_ISDIR (st.st_mode)) {
        plog_error ("network.security.allowDir %s: %s", dir,
                    errno ? strerror (errno) : "not a directory");
        return -1;
    }
    //  A role directory may be missing (that role is admitted nowhere), but
    //  one that exists must be readable: silently admitting nobody, or an
    //  old list, would be worse than not starting.
    size_t present = 0;
    for (int r = 0; r < PROTO_ROLES; r++) {
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", dir, s_role_dirs[r]);
        if (stat (path, &st) && errno == ENOENT)
            continue;
        DIR *d = opendir (path);
        if (!d) {
            plog_error ("cannot read the allow-list %s: %s", path, strerror (errno));
            return -1;
        }
        closedir (d);
        present++;
    }
    if (!present)
        plog_warn ("%s has none of pollers/, workers/, sinks/, operators/: every client will be"
                   " refused until keys are put there", dir);
    //  The shared tables exist before the actor, which may use them at once.
    pthread_mutex_lock (&s_lock);
    memset (&s_counts, 0, sizeof s_counts);
    s_routes = zhashx_new ();
    zhashx_set_destructor (s_routes, s_route_free);
    zhashx_set_duplicator (s_routes, NULL);
    s_route_lru = zlistx_new ();
    s_revoked = zhashx_new ();
    zhashx_set_destructor (s_revoked, NULL);
    zhashx_set_duplicator (s_revoked, NULL);
    pthread_mutex_unlock (&s_lock);
    s_args_t args = {pstrdup (dir), -1};
    zactor_t *actor = zactor_new (s_actor_fn, &args);
    free (args.allow_dir);
    if (!actor || args.status != 0) {
        zactor_destroy (&actor);
        proto_auth_stop ();
        plog_error ("the authenticator could not start; refusing to run without it");
        return -1;
    }
    pthread_mutex_lock (&s_lock);
    s_actor = actor;
    pthread_mutex_unlock (&s_lock);
    plog_info ("authenticator on: CurveZMQ clients are checked against the allow-lists in %s", dir);
    return 0;
}

void proto_auth_stop (void)
{
    pthread_mutex_lock (&s_lock);
    zactor_t *actor = s_actor;
    s_actor = NULL;
    pthread_mutex_unlock (&s_lock);
    //  Outside the lock: the actor takes it while it finishes a request.
    zactor_destroy (&actor);
    pthread_mutex_lock (&s_lock);
    zlistx_destroy (&s_route_lru);
    zhashx_destroy (&s_routes);
    zhashx_destroy (&s_revoked);
    pthread_mutex_unlock (&s_lock);
}

int proto_auth_watch (zsock_t *sock, const char *domain)
{
    static int s_sequence = 0;
    char endpoint[64];
    snprintf (endpoint, sizeof endpoint, "inproc://parley-auth-monitor-%d-%d", getpid (),
              __atomic_add_fetch (&s_sequence, 1, __ATOMIC_SEQ_CST));
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
               | ZMQ_EVENT_MONITOR_STOPPED;
    if (zmq_socket_monitor (zsock_resolve (sock), endpoint, events)) {
        plog_error ("cannot monitor the %s socket: %s", domain, zmq_strerror (zmq_errno ()));
        return -1;
    }
    //  Asked, and answered, before the socket binds: a monitor whose events
    //  nobody reads would block the socket's I/O thread.
    zsock_t *request = zsock_new (ZMQ_REQ);
    zsock_set_rcvtimeo (request, WATCH_TIMEOUT_MS);
    zsock_set_sndtimeo (request, WATCH_TIMEOUT_MS);
    char *answer = NULL;
    if (zsock_connect (request, CONTROL_ENDPOINT) == 0
        && zstr_sendx (request, "WATCH", endpoint, domain, NULL) == 0)
        answer = zstr_recv (request);
    zsock_destroy (&request);
    int rc = answer && streq (answer, "OK") ? 0 : -1;
    zstr_free (&answer);
    if (rc) {
        zmq_socket_monitor (zsock_resolve (sock), NULL, 0);
        plog_error ("the authenticator did not take the %s socket's monitor", domain);
    }
    return rc;
}
