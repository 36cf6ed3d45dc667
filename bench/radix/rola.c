/*
 * bench/radix: ROLA proofs checked a second, as LinkRadix checks them
 * before any ledger read (the peer is peer.mjs: Radix's own @radixdlt/rola
 * on the same proofs): BLAKE2b-256 of the wallet's message, the Ed25519
 * signature, and the key's virtual account derived and compared.
 * Proofs are made here (libsodium) and written to FILE for the peer.
 * Prints one JSON line.
 *   rola FILE SECONDS
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "proven.h"
#include "sessions/rola.h"


#define PROOFS   256
#define DAPP     "account_rdx12xsvygvltz4uhsht6tdrfxktzpmnl77r0d40j8agmujgdj022sudkk"
#define ORIGIN   "https://dapp.example"

typedef struct {
    uint8_t  challenge[32];
    uint8_t  pub[32];
    uint8_t  sig[64];
    char     account[PROVEND_RADIX_ADDRESS_MAX + 1];
} proof_t;


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
hex(FILE *f, const uint8_t *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        fprintf(f, "%02x", p[i]);
    }
}


int
main(int argc, char **argv)
{
    char      err[PROVEN_ERR_LEN], derived[PROVEND_RADIX_ADDRESS_MAX + 1];
    FILE     *f;
    size_t    i;
    double    start, seconds, elapsed;
    uint8_t   secret[64], hash[32];
    proof_t  *proofs;
    uint64_t  n;

    if (argc != 3 || sodium_init() < 0) {
        fprintf(stderr, "usage: rola FILE SECONDS\n");
        return 2;
    }
    seconds = atof(argv[2]);
    proofs = calloc(PROOFS, sizeof(*proofs));
    f = fopen(argv[1], "w");
    if (proofs == NULL || f == NULL) {
        perror("rola");
        return 1;
    }
    fprintf(f, "[");
    for (i = 0; i < PROOFS; i++) {
        randombytes_buf(proofs[i].challenge, 32);
        crypto_sign_keypair(proofs[i].pub, secret);
        if (provend_rola_hash(proofs[i].challenge, DAPP, ORIGIN, hash, err,
                              sizeof(err)) != PROVEN_OK
            || provend_rola_virtual_account(1, PROVEND_ROLA_ED25519,
                                            proofs[i].pub, 32,
                                            proofs[i].account,
                                            sizeof(proofs[i].account))
               != PROVEN_OK)
        {
            fprintf(stderr, "rola: cannot make a proof\n");
            return 1;
        }
        crypto_sign_detached(proofs[i].sig, NULL, hash, 32, secret);
        fprintf(f, "%s{\"challenge\":\"", i > 0 ? "," : "");
        hex(f, proofs[i].challenge, 32);
        fprintf(f, "\",\"public_key\":\"");
        hex(f, proofs[i].pub, 32);
        fprintf(f, "\",\"signature\":\"");
        hex(f, proofs[i].sig, 64);
        fprintf(f, "\",\"account\":\"%s\"}", proofs[i].account);
    }
    fprintf(f, "]\n");
    fclose(f);

    /* what LinkRadix does of each, the ledger read apart */
    n = 0;
    start = now_s();
    do {
        for (i = 0; i < 64; i++, n++) {
            const proof_t  *p = &proofs[n % PROOFS];

            if (provend_rola_hash(p->challenge, DAPP, ORIGIN, hash, err,
                                  sizeof(err)) != PROVEN_OK
                || provend_rola_verify(PROVEND_ROLA_ED25519, p->pub, 32,
                                       p->sig, 64, hash, err, sizeof(err))
                   != PROVEN_OK
                || provend_rola_virtual_account(1, PROVEND_ROLA_ED25519,
                                                p->pub, 32, derived,
                                                sizeof(derived)) != PROVEN_OK
                || strcmp(derived, p->account) != 0)
            {
                fprintf(stderr, "rola: a good proof refused: %s\n", err);
                return 1;
            }
        }
        elapsed = now_s() - start;
    } while (elapsed < seconds);
    printf("{\"checks_per_s\": %.0f}\n", (double) n / elapsed);
    free(proofs);
    return 0;
}
