/*  proto_sock - every Parley socket is made here.

    One function creates and configures all sockets, so transport policy
    (high-water marks, frame size limit, reconnect pacing, ZMTP heartbeats,
    and CurveZMQ when it is switched on) is decided in exactly one place.
*/
#ifndef PROTO_SOCK_H_INCLUDED
#define PROTO_SOCK_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "proto/proto.h"

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
} proto_peer_t;

//  Receives one message without blocking. Returns PROTO_OK (`msg` holds it:
//  release it with proto_msg_release), PROTO_NONE (nothing waiting), or
//  PROTO_MALFORMED (the frame was dropped; `why` says what was wrong). `peer`
//  may be NULL.
int proto_recv (zsock_t *sock, proto_msg_t *msg, proto_peer_t *peer, char *why, size_t whylen);

//  The routing id as printable text (hex, shortened), for logs.
const char *proto_peer_name (const proto_peer_t *peer, char *buf, size_t len);

#endif
