/*  proto_sock - every Parley socket is made here.

    One function creates and configures all sockets, so transport policy
    (high-water marks, frame size limit, reconnect pacing, ZMTP heartbeats,
    and CurveZMQ when it is switched on) is decided in exactly one place.
*/
#ifndef PROTO_SOCK_H_INCLUDED
#define PROTO_SOCK_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

typedef struct {
    int hwm;                //  messages queued per peer
    int max_frame_bytes;    //  larger frames are refused by ZeroMQ
    int heartbeat_ms;       //  ZMTP heartbeat interval; a dead TCP peer is noticed after 3
    int linger_ms;          //  how long close waits to flush outgoing frames
} proto_net_t;

//  Defaults matching the configuration's defaults.
void proto_net_defaults (proto_net_t *net);

//  Creates a socket of `type` (ZMQ_ROUTER, ZMQ_DEALER, ...), binds or
//  connects it to `endpoint`. `identity` (may be NULL) names a DEALER so a
//  reconnect keeps its routing id. Returns NULL (logged) on failure.
zsock_t *proto_sock_new (const proto_net_t *net, int type, const char *endpoint, bool bind,
                         const char *identity);

//  The endpoint a bound socket actually listens on (resolves "*" ports).
//  Caller owns the string.
char *proto_sock_endpoint (zsock_t *sock);

#endif
