/*  dest_feed - the platform destinations' readers without the network.

    For the unit tests and the fuzz targets (tests/fuzz/): each function
    hands a destination made by dest_new (of that type) something its
    platform sent, as its connection would. Nothing is sent.
*/
#ifndef DEST_FEED_H_INCLUDED
#define DEST_FEED_H_INCLUDED

#include "sink/dest.h"
#include "net/pirc.h"

//  twitch: one line the default account's IRC connection parsed (the
//  first account's when there is no default).
void dest_twitch_line (dest_t *self, const pirc_msg_t *msg, int64_t now);

#endif
