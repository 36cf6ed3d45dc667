/*
 * One framed stream over a libuv pipe, for every peer provend talks to in
 * frames (lib/proven.h): the connections on its socket, its lines to app
 * workers, and the vsock and host channels to come.
 *
 * Reading: bytes go into a frame reader (bounded by max_body) and each
 * whole frame is handed to on_frame, in order.  The owner may pause the
 * stream (back-pressure: no frame is handed and nothing is read) and
 * resume it; frames already read wait in the reader.  The end of input
 * or a read error goes to on_end once, and reading stops.
 *
 * Writing: provend_stream_write() takes a whole frame; it leaves at once
 * when the socket takes it, else in order behind the frames queued.
 * on_written is told once per frame written, whether it went out, was
 * queued and then went out, or was dropped (a broken stream).
 *
 * Calls: on a stream opened with provend_stream_connect() and no
 * on_frame of its own, provend_stream_call() sends a request under the
 * next id and hands the response with that id to its done, or a failure:
 * past its deadline, or when the stream breaks.
 *
 * Closing: provend_stream_close() closes the handles; queued writes are
 * told (dropped), calls fail, and on_closed comes last, once: the owner
 * may free then.
 */

#ifndef PROVEND_STREAM_H
#define PROVEND_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proven.h"

typedef struct provend_stream_s       provend_stream_t;
typedef struct provend_stream_call_s  provend_stream_call_t;

typedef void (*provend_stream_frame_pt)(provend_stream_t *s,
    const uint8_t *body, size_t len);
/* why NULL: the peer is done writing (EOF) */
typedef void (*provend_stream_end_pt)(provend_stream_t *s, const char *why);
typedef void (*provend_stream_written_pt)(provend_stream_t *s, int ok);
typedef void (*provend_stream_closed_pt)(provend_stream_t *s);

/* failure NULL: res is the answer (borrowed for the call) */
typedef void (*provend_stream_done_pt)(void *data, const char *failure,
    proven_response_t *res);

struct provend_stream_s {
    uv_pipe_t                  pipe;
    uv_timer_t                 timer;       /* calls' deadlines */
    uv_connect_t               connect;
    proven_frame_reader_t      reader;
    void                      *data;        /* the owner's */

    provend_stream_frame_pt    on_frame;
    provend_stream_end_pt      on_end;
    provend_stream_written_pt  on_written;
    provend_stream_closed_pt   on_closed;

    unsigned                   handles;     /* open: closed when 0 */
    unsigned                   writes;      /* queued in libuv */
    size_t                     queued_bytes; /* behind uv_write */
    int                        connecting;  /* frames wait in pending */
    int                        reading;
    int                        paused;
    int                        dispatching;
    int                        ended;
    int                        bad_frame;   /* ended: a length out of bounds */
    int                        closing;

    uint8_t                  **pending;     /* before the connect ends */
    size_t                    *pending_len;
    size_t                     npending;

    uint64_t                   next_id;
    provend_stream_call_t     *calls;
    size_t                     ncalls;
};

#define PROVEND_STREAM_PENDING_MAX  64
#define PROVEND_STREAM_CALLS_MAX    4096
/* bytes waiting in the write queue past which a line takes no more
   calls, and a connection reads no more requests, until its peer reads */
#define PROVEND_STREAM_QUEUED_MAX   (16 * 1024 * 1024)

/* A stream on an accepted or spawned pipe: init, then accept into it. */
int provend_stream_init(uv_loop_t *loop, provend_stream_t *s,
    size_t max_body);
/* A stream that connects to path; writes wait for the connect. */
int provend_stream_connect(uv_loop_t *loop, provend_stream_t *s,
    const char *path, size_t max_body);

int provend_stream_start(provend_stream_t *s);
void provend_stream_pause(provend_stream_t *s);
void provend_stream_resume(provend_stream_t *s);

/*
 * Takes frame (a whole frame, header included; NULL: dropped).
 * PROVEN_ERR: dropped now (on_written told so).
 */
int provend_stream_write(provend_stream_t *s, uint8_t *frame, size_t len);

/*
 * Sends request (its "id" set to the stream's next) and hands the answer
 * to done within timeout_ms.  PROVEN_ERR (done not called) when the
 * stream is broken or too many calls wait.
 */
int provend_stream_call(provend_stream_t *s, cbor_item_t *request,
    uint64_t timeout_ms, provend_stream_done_pt done, void *data);

/* Whether calls can still go on this stream. */
int provend_stream_usable(provend_stream_t *s);

void provend_stream_close(provend_stream_t *s);

#endif /* PROVEND_STREAM_H */
