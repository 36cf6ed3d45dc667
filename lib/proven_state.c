/*
 * The state page: provend's one writer, nginx workers' many readers, in a
 * shared file mapping (see lib/proven.h).  A sequence lock: the writer
 * makes the sequence odd, writes, then makes it even again; a reader
 * keeps a copy only if the sequence was even and the same around it.
 */

#include <stdlib.h>
#include <string.h>

#include "proven.h"


#define PROVEN_STATE_TRIES  100


static uint32_t *
proven_state_word(const uint8_t *page, size_t offset)
{
    return (uint32_t *) (page + offset);
}


void
proven_state_init(uint8_t *page)
{
    memcpy(page, PROVEN_STATE_MAGIC, sizeof(PROVEN_STATE_MAGIC) - 1);
}


int
proven_state_publish(uint8_t *page, const uint8_t *data, size_t len)
{
    uint32_t  *seq, *length;

    if (len == 0 || len > PROVEN_STATE_SIZE - PROVEN_STATE_HEADER) {
        return PROVEN_ERR;
    }

    seq = proven_state_word(page, 8);
    length = proven_state_word(page, 12);

    /* odd while writing: readers retry */
    __atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) | 1,
                     __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(page + PROVEN_STATE_HEADER, data, len);
    __atomic_store_n(length, (uint32_t) len, __ATOMIC_RELAXED);
    __atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELEASE);
    return PROVEN_OK;
}


int
proven_state_valid(const uint8_t *page)
{
    return memcmp(page, PROVEN_STATE_MAGIC, sizeof(PROVEN_STATE_MAGIC) - 1)
           == 0;
}


uint32_t
proven_state_seq(const uint8_t *page)
{
    return __atomic_load_n(proven_state_word(page, 8), __ATOMIC_ACQUIRE);
}


int
proven_state_copy(const uint8_t *page, uint8_t **out, size_t *len,
    uint32_t *seq)
{
    size_t     tries;
    uint8_t   *copy;
    uint32_t   before, after, n;

    copy = NULL;

    for (tries = 0; tries < PROVEN_STATE_TRIES; tries++) {
        before = proven_state_seq(page);
        if (before & 1) {
            continue;
        }

        n = __atomic_load_n(proven_state_word(page, 12), __ATOMIC_RELAXED);
        if (n > PROVEN_STATE_SIZE - PROVEN_STATE_HEADER) {
            continue;                   /* torn: the writer is at work */
        }

        free(copy);
        copy = malloc(n ? n : 1);
        if (copy == NULL) {
            return PROVEN_ERR;
        }

        memcpy(copy, page + PROVEN_STATE_HEADER, n);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        after = __atomic_load_n(proven_state_word(page, 8), __ATOMIC_RELAXED);

        if (after != before) {
            continue;
        }

        if (n == 0) {                   /* never published */
            free(copy);
            return PROVEN_ERR;
        }

        *out = copy;
        *len = n;
        *seq = before;
        return PROVEN_OK;
    }

    free(copy);
    return PROVEN_AGAIN;
}
