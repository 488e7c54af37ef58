/*  llm_chat - the OpenAI chat completions format, both ways.

    Builds the request body (POST /v1/chat/completions), reads a complete
    answer or a streamed one (one server-sent event at a time), and sorts an
    error answer into what the worker does about it. Every reader takes
    untrusted bytes: a bad answer yields LLM_MALFORMED and a sentence saying
    what was wrong and where ("choices[0].message.content: expected a
    string, got a number"), never a crash.
*/
#ifndef LLM_CHAT_H_INCLUDED
#define LLM_CHAT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"

//  How a call ended, and so what the worker does next.
typedef enum {
    LLM_OK = 0,         //  a reply
    LLM_CONTEXT,        //  prompt longer than the model's context: permanent, dead-lettered
    LLM_MALFORMED,      //  an answer we cannot read: permanent, dead-lettered
    LLM_REJECTED,       //  another 4xx (bad request): permanent, dead-lettered
    LLM_RATE_LIMITED,   //  429: pause this server, try another
    LLM_BUSY,           //  503: pause this server, try another
    LLM_SERVER_ERROR,   //  other 5xx: counts against the server, retry elsewhere
    LLM_TIMEOUT,        //  no complete answer in time: as a server error
    LLM_TRANSPORT,      //  refused, reset, DNS...: as a server error
    LLM_AUTH,           //  401/403: the server refuses our key; as a server error
    LLM_NOT_FOUND,      //  404: wrong URL or unknown model on this server; retry elsewhere
    LLM_OUTCOME_COUNT
} llm_outcome_t;

typedef struct {
    const char *model;              //  NULL or "" = leave it to the server
    json_t *messages;               //  borrowed: the prompt (see prompt.h)
    const char *max_tokens_field;   //  "max_tokens" or "max_completion_tokens"
    int64_t max_tokens;
    double temperature;
    const pcfg_strs_t *stop;        //  may be NULL
    bool stream;
} llm_chat_request_t;

typedef struct {
    char *text;                     //  the reply so far; owned, never NULL after a parse
    size_t len, cap;
    char finish_reason[32];
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    bool done;                      //  stream: [DONE] seen
} llm_reply_t;

//  The JSON request body. Caller owns the result.
char *llm_chat_request_body (const llm_chat_request_t *request);

//  Reads a complete answer into `reply` (which starts zeroed). Returns
//  LLM_OK, LLM_MALFORMED with `why`, or, for a 200 that carries an error
//  object, the outcome of that error with its message in `why`.
llm_outcome_t llm_chat_parse (const char *body, size_t len, llm_reply_t *reply, char *why,
                              size_t whylen);

//  Reads one streamed event's data into `reply`: text deltas are appended,
//  usage and finish_reason kept, "[DONE]" sets reply->done. `got_text` is
//  set when this event carried text. Returns like llm_chat_parse.
llm_outcome_t llm_chat_stream_event (llm_reply_t *reply, const char *data, size_t len,
                                     bool *got_text, char *why, size_t whylen);

void llm_reply_clear (llm_reply_t *reply);

//  Sorts a non-2xx answer. Writes the server's own explanation, cleaned up
//  and shortened, into `message` ("" if it gave none).
llm_outcome_t llm_chat_classify (long status, const char *body, size_t len, char *message,
                                 size_t msglen);

//  True when an error text says the prompt did not fit the model's context
//  (the phrasings of llama.cpp, OpenAI, vLLM, LM Studio and Ollama).
bool llm_chat_is_context_error (const char *text);

//  Short name of an outcome, for counters and logs ("rate_limited").
const char *llm_outcome_name (llm_outcome_t outcome);

//  Replaces every occurrence of `secret` in `text` with "***" (in place;
//  never longer). Server messages may quote our own request back.
void llm_redact (char *text, const char *secret);

#endif
