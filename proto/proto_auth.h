/*  proto_auth - who may connect to which Parley socket: the ZAP handler.

    With network.security on, every bound socket is a CurveZMQ server whose
    ZAP domain names the socket; libzmq asks this authenticator about every
    client before the connection carries a single message. A client is
    admitted when its public key is in the allow-list of a role the domain
    admits:

        domain      socket                       admits
        frontend    broker, pollers/sinks/ctl    pollers, sinks, operators
        backend     broker, workers              workers
        results     sink, worker results         workers
        stats       sink, the live stats feed    operators

    An allow-list is a directory of public certificates (NAME.key), one per
    role under network.security.allowDir: pollers/, workers/, sinks/,
    operators/. Deleting a file revokes that key: its new connections are
    refused at once, and messages on its open connections are refused by
    proto_recv within a second (rescan interval).

    Every admitted connection's messages carry the ZAP User-Id "ROLE/NAME"
    (proto_peer_t.user; NAME is the certificate's metadata "name", else the
    first 8 characters of its key) and the client's public key (property
    PROTO_AUTH_KEY_PROPERTY, proto_peer_t.key), so a daemon knows the role of
    the sender of every message it handles.

    One authenticator per process (libzmq has one ZAP endpoint per context):
    the broker and the sink start it before they bind anything and stop it
    after every socket is closed. A CURVE server without a ZAP handler
    admits every client, so proto_sock_new refuses to make one while the
    authenticator is not running.
*/
#ifndef PROTO_AUTH_H_INCLUDED
#define PROTO_AUTH_H_INCLUDED

#include "common/pconfig.h"

#include <czmq.h>
#include <stdbool.h>

//  The ZAP metadata property that carries the client's public key (Z85).
//  ZAP properties take precedence over anything a client sends itself.
#define PROTO_AUTH_KEY_PROPERTY "Parley-Key"

typedef enum {
    PROTO_ROLE_POLLER,
    PROTO_ROLE_WORKER,
    PROTO_ROLE_SINK,
    PROTO_ROLE_OPERATOR,
    PROTO_ROLES
} proto_role_t;

//  "poller", "worker", "sink", "operator": the ROLE of a User-Id.
const char *proto_role_name (proto_role_t role);

//  "pollers", "workers", "sinks", "operators": the allow-list directory.
const char *proto_role_dir (proto_role_t role);

//  Whether ZAP domain `domain` admits clients of `role`. An unknown domain
//  admits nobody.
bool proto_auth_admits (const char *domain, proto_role_t role);

//  True when a message's sender proved `role`: its User-Id (`user`, as in
//  proto_peer_t) is "ROLE/NAME" for that role.
bool proto_auth_user_is (const char *user, proto_role_t role);

//  Starts the authenticator if network.security.enabled (otherwise does
//  nothing and returns 0). Returns -1, logged, when it could not start or
//  network.security.allowDir cannot be read: the daemon must then refuse to
//  start. Shaped to be a pdaemon_info_t.before hook.
int proto_auth_start (const pcfg_t *config);

//  Stops it; call only once every secure socket is closed.
void proto_auth_stop (void);

//  True between a successful proto_auth_start and proto_auth_stop.
bool proto_auth_running (void);

//  Checks one received message on a socket with ZAP domain `domain`:
//  `user` and `key` are the message's User-Id and key properties, `address`
//  its Peer-Address, `route` the ROUTER routing id (size 0 for other
//  sockets). Refused (-1, `why` says why, logged at a limited rate):
//  - a connection the authenticator did not admit (no key);
//  - a key removed from its allow-list since the connection was made;
//  - a routing id already used by another key in this domain (a peer that
//    tries to take over another client's route with ROUTER_HANDOVER).
//  The routing-id table remembers the most recent 100,000 routing ids.
//  Returns 0 when the message may be handled.
int proto_auth_check (const char *domain, const char *user, const char *key, const char *address,
                      const void *route, size_t route_size, char *why, size_t whylen);

//  Logs the failed handshakes of a bound secure socket (plain-text clients,
//  clients that were given another server key): libzmq refuses those
//  before any ZAP request, so only a socket monitor sees them. Call before
//  binding. Returns 0 or -1.
int proto_auth_watch (zsock_t *sock, const char *domain);

//  What the authenticator did since it started, for stats and tests.
typedef struct {
    uint64_t admitted;          //  connections admitted
    uint64_t refused;           //  connections refused by the allow-lists
    uint64_t failed_handshakes; //  failed before ZAP (plain text, wrong server key)
    uint64_t refused_messages;  //  messages refused by proto_auth_check
} proto_auth_counts_t;

void proto_auth_counts (proto_auth_counts_t *counts);

//  For tests: the routing-id table's bound and the allow-list rescan
//  interval (ms). Call before proto_auth_start.
void proto_auth_set_limits (size_t max_routes, int rescan_ms);

#endif
