/*
 * Keccak-256 as Ethereum uses it: the Keccak[c=512] sponge with the
 * original 0x01 padding (SHA3-256 pads 0x06 and gives other hashes).
 * OpenSSL 3.0 and the libraries Debian 12 ships offer SHA3 only, so the
 * permutation is written here from FIPS 202's description (section 3.2),
 * checked against known answers in tests/test_eth.c.
 */

#include <stdint.h>
#include <string.h>

#include "eth.h"


#define KECCAK_RATE    136      /* bytes: 1600 - 2 * 256 bits */
#define KECCAK_ROUNDS  24


/* Keccak-f[1600]: the state as 25 lanes, lane (x, y) at x + 5 * y. */
static void
keccak_f(uint64_t a[25])
{
    int       round, x, y;
    uint64_t  c[5], d[5], b[25];

    /* iota's round constants (FIPS 202, 3.2.5) */
    static const uint64_t  rc[KECCAK_ROUNDS] = {
        0x0000000000000001ULL, 0x0000000000008082ULL,
        0x800000000000808aULL, 0x8000000080008000ULL,
        0x000000000000808bULL, 0x0000000080000001ULL,
        0x8000000080008081ULL, 0x8000000000008009ULL,
        0x000000000000008aULL, 0x0000000000000088ULL,
        0x0000000080008009ULL, 0x000000008000000aULL,
        0x000000008000808bULL, 0x800000000000008bULL,
        0x8000000000008089ULL, 0x8000000000008003ULL,
        0x8000000000008002ULL, 0x8000000000000080ULL,
        0x000000000000800aULL, 0x800000008000000aULL,
        0x8000000080008081ULL, 0x8000000000008080ULL,
        0x0000000080000001ULL, 0x8000000080008008ULL
    };
    /* rho's offsets, lane (x, y) at x + 5 * y (FIPS 202, table 2) */
    static const unsigned  rho[25] = {
         0,  1, 62, 28, 27,
        36, 44,  6, 55, 20,
         3, 10, 43, 25, 39,
        41, 45, 15, 21,  8,
        18,  2, 61, 56, 14
    };

    for (round = 0; round < KECCAK_ROUNDS; round++) {
        /* theta: each lane with the parities of two neighbouring columns */
        for (x = 0; x < 5; x++) {
            c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
        }
        for (x = 0; x < 5; x++) {
            d[x] = c[(x + 4) % 5]
                   ^ (c[(x + 1) % 5] << 1 | c[(x + 1) % 5] >> 63);
        }
        for (y = 0; y < 25; y += 5) {
            for (x = 0; x < 5; x++) {
                a[x + y] ^= d[x];
            }
        }

        /* rho and pi: lane (x, y) rotated, to (y, 2x + 3y) */
        for (y = 0; y < 5; y++) {
            for (x = 0; x < 5; x++) {
                uint64_t  lane = a[x + 5 * y];
                unsigned  r = rho[x + 5 * y];

                b[y + 5 * ((2 * x + 3 * y) % 5)] =
                    r == 0 ? lane : (lane << r | lane >> (64 - r));
            }
        }

        /* chi: each row mixed non-linearly */
        for (y = 0; y < 25; y += 5) {
            for (x = 0; x < 5; x++) {
                a[x + y] = b[x + y]
                           ^ (~b[(x + 1) % 5 + y] & b[(x + 2) % 5 + y]);
            }
        }

        /* iota */
        a[0] ^= rc[round];
    }
}


/* XORs a block of the rate into the state, lanes little-endian. */
static void
keccak_absorb(uint64_t a[25], const uint8_t *block)
{
    int       i, j;
    uint64_t  lane;

    for (i = 0; i < KECCAK_RATE / 8; i++) {
        lane = 0;
        for (j = 7; j >= 0; j--) {
            lane = lane << 8 | block[8 * i + j];
        }
        a[i] ^= lane;
    }
    keccak_f(a);
}


void
provend_keccak256(const void *in, size_t len, uint8_t out[32])
{
    int             i, j;
    size_t          left;
    uint8_t         last[KECCAK_RATE];
    uint64_t        a[25];
    const uint8_t  *p = in;

    memset(a, 0, sizeof(a));
    for (left = len; left >= KECCAK_RATE; left -= KECCAK_RATE) {
        keccak_absorb(a, p);
        p += KECCAK_RATE;
    }

    /* pad10*1 with Keccak's own domain bit: 0x01 ... 0x80 */
    memset(last, 0, sizeof(last));
    if (left > 0) {
        memcpy(last, p, left);
    }
    last[left] ^= 0x01;
    last[KECCAK_RATE - 1] ^= 0x80;
    keccak_absorb(a, last);

    for (i = 0; i < 4; i++) {
        for (j = 0; j < 8; j++) {
            out[8 * i + j] = (uint8_t) (a[i] >> (8 * j));
        }
    }
}
