/*  proto_sock - every Parley socket is made here.

    One function creates and configures all sockets, so transport policy
    (high-water marks, frame size limit, reconnect pacing, ZMTP heartbeats,
    and CurveZMQ security) is decided in exactly one place.

    Security (network.security.enabled): every socket on a Parley port is
    CurveZMQ. A bound socket is a CURVE server with this process's
    certificate and the ZAP domain of its port ("frontend", "backend",
    "results", "stats"), checked by proto_auth; a connecting socket is a
    CURVE client with this process's certificate that accepts only the
    server whose public key it pinned (brokerKey for broker ports, sinkKey
    for sink ports). Security off: plain ZMTP, which is only allowed where
    nobody else can reach it: binding a TCP address that is not loopback is
    refused unless network.insecure is true (then it is logged as a
    warning); ipc:// and inproc:// are always allowed.
*/
#ifndef PROTO_SOCK_H_INCLUDED
#define PROTO_SOCK_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "common/pconfig.h"
#include "proto/proto.h"
#include "proto/proto_keys.h"

typedef struct {
    int hwm;                //  messages queued per peer
    int max_frame_bytes;    //  larger frames are refused by ZeroMQ
    int heartbeat_ms;       //  ZMTP heartbeat interval; a dead TCP peer is noticed after 3
    int linger_ms;          //  how long close waits to flush outgoing frames
    bool secure;            //  CurveZMQ on every Parley port
    bool insecure;          //  plain TCP may bind non-loopback addresses (warned)
    bool failed;            //  the security settings could not be loaded: no socket is made
    char public_key[PROTO_KEY_TXT];     //  this process's certificate
    char secret_key[PROTO_KEY_TXT];     //  never logged, never in an error message
    char broker_key[PROTO_KEY_TXT];     //  the broker's public key, pinned; "" = not known
    char sink_key[PROTO_KEY_TXT];       //  the sink's public key, pinned; "" = not known
} proto_net_t;

//  Defaults matching the configuration's defaults (security off).
void proto_net_defaults (proto_net_t *net);

//  Fills `net` from the configuration: transport settings, and with
//  network.security on, this process's certificate and the pinned server
//  keys `role` needs ("broker": none; "sink", "poller": the broker's;
//  "worker": the broker's and the sink's; any other role, e.g. "parleyctl":
//  those configured). Returns 0, or -1 (logged) when security is on and a
//  key file cannot be used: then `net` is marked failed and proto_sock_new
//  refuses every socket, so the daemon does not start.
int proto_net_from_config (proto_net_t *net, const pcfg_t *config, const char *role);

//  The Parley port a socket binds or connects to: names the ZAP domain of a
//  bound socket and the pinned key of a connecting one.
typedef enum {
    PROTO_PORT_NONE,        //  not a Parley port (tests, inproc): never CURVE
    PROTO_PORT_FRONTEND,    //  broker: pollers, sinks, parleyctl
    PROTO_PORT_BACKEND,     //  broker: workers
    PROTO_PORT_RESULTS,     //  sink: workers' results
    PROTO_PORT_STATS,       //  sink: the live stats feed
} proto_port_t;

//  "frontend", "backend", "results", "stats" ("" for PROTO_PORT_NONE).
const char *proto_port_name (proto_port_t port);

//  Creates a socket of `type` (ZMQ_ROUTER, ZMQ_DEALER, ...), binds or
//  connects it to `endpoint`. `identity` (may be NULL) names a DEALER so a
//  reconnect keeps its routing id. `port` says which Parley port this is
//  (see above). Returns NULL (logged) on failure, including every refusal
//  of the security policy.
zsock_t *proto_sock_new (const proto_net_t *net, int type, const char *endpoint, bool bind,
                         const char *identity, proto_port_t port);

//  proto_sock_new without the bind or connect, for a caller that must set
//  something up first: a socket monitor sees only connections made after
//  it, and connecting, disconnecting and connecting again to catch the
//  first can leave two connections to one peer for a moment, the monitor
//  unable to tell which of them is the one that stays.
zsock_t *proto_sock_prepare (const proto_net_t *net, int type, const char *endpoint, bool bind,
                             const char *identity, proto_port_t port);

//  True when `endpoint` stays on this machine: ipc://, inproc://, or TCP on
//  a loopback address (127.0.0.0/8, ::1, localhost, the "lo" interface).
bool proto_endpoint_is_local (const char *endpoint);

//  The endpoint a bound socket actually listens on (resolves "*" ports).
//  Caller owns the string.
char *proto_sock_endpoint (zsock_t *sock);

//  --- whole messages ----------------------------------------------------------
//  Every hop sends and receives through these, so no send can block a loop
//  and every frame is decoded and checked the same way.

//  Encodes `body` and queues it on `sock` without ever blocking. Returns 0,
//  or -1 when ZeroMQ could not take it (no peer yet, high-water mark
//  reached, peer gone): nothing is kept, so the caller must be able to send
//  it again (every Parley request is resent until answered).
int proto_send (zsock_t *sock, proto_type_t type, const void *body);

//  The same on a ROUTER socket, to the peer whose routing id is `route`.
int proto_send_to (zsock_t *sock, const void *route, size_t route_size, proto_type_t type,
                   const void *body);

//  Sends an encoded frame (as from proto_encode), to `route` when it is not
//  NULL; the frame is consumed either way. Returns 0 or -1 as proto_send.
int proto_send_frame (zsock_t *sock, const void *route, size_t route_size, zmq_msg_t *frame);

//  Who sent a received message.
typedef struct {
    uint8_t route[256];     //  ROUTER sockets: the sender's routing id
    size_t route_size;
    //  The connection's authenticated identity (the ZAP handler's User-Id,
    //  "role/name"); empty on connections without security.
    char user[256];
    //  Its public key (Z85); empty on connections without security.
    char key[PROTO_KEY_TXT];
} proto_peer_t;

//  Receives one message without blocking. Returns PROTO_OK (`msg` holds it:
//  release it with proto_msg_release), PROTO_NONE (nothing waiting), or
//  PROTO_MALFORMED (the frame was dropped; `why` says what was wrong). `peer`
//  may be NULL. On a secure bound socket, a message proto_sock_admit
//  refuses is dropped as PROTO_MALFORMED too.
int proto_recv (zsock_t *sock, proto_msg_t *msg, proto_peer_t *peer, char *why, size_t whylen);

//  The security check proto_recv makes, for code that reads frames itself:
//  `body` is the message's (first) body frame, `route` its routing id on a
//  ROUTER (NULL, 0 otherwise). On a socket without a ZAP domain (security
//  off, or a connecting socket) it admits everything. Otherwise it refuses
//  (-1, `why`) a connection the authenticator did not admit, a key removed
//  from its allow-list since, and a routing id taken over by another key.
//  Fills `peer` (may be NULL) with the User-Id and key. Returns 0 to admit.
int proto_sock_admit (zsock_t *sock, const void *route, size_t route_size, zmq_msg_t *body,
                      proto_peer_t *peer, char *why, size_t whylen);

//  The routing id as printable text (hex, shortened), for logs.
const char *proto_peer_name (const proto_peer_t *peer, char *buf, size_t len);

#endif
