/*
 * wake_word: streams a sequence of audio feature steps through one session of a
 * streaming wake-word model (state kept in the daemon, per session), then resets the
 * session and runs the first step again, which must answer as at the start.
 *
 *   cc -Iclient-c/include wake_word.c -Ltarget/debug -lswitchyard -o wake_word
 *   wake_word SOCKET MODEL.tflite STEPS.i8 N OUT.bin
 *
 * STEPS.i8 holds N steps of the model's int8 input, back to back; OUT.bin receives the
 * N outputs' raw bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard.h"

static int check(sy_status s, const char *what) {
    if (s != SY_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, sy_status_name(s), sy_last_error());
        return 1;
    }
    return 0;
}

/* Runs one step on the session; copies its single output into `out` (at most cap). */
static int step(sy_session *s, const sy_tensor_info *in, const signed char *x, size_t len,
                unsigned char *out, size_t cap, size_t *got) {
    sy_tensor t = {in->dtype, in->rank, in->shape, x, len, NULL};
    sy_outputs *o = NULL;
    if (check(sy_session_run(s, &t, 1, NULL, &o), "run")) return 1;
    sy_tensor r;
    int bad = check(sy_outputs_get(o, 0, &r), "output") || r.len > cap;
    if (!bad) {
        memcpy(out, r.data, r.len);
        *got = r.len;
    }
    sy_outputs_free(o);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: wake_word SOCKET MODEL STEPS.i8 N OUT.bin\n");
        return 2;
    }
    size_t n = (size_t)strtoul(argv[4], NULL, 10);
    FILE *f = fopen(argv[3], "rb");
    if (!f || n == 0) return 2;
    fseek(f, 0, SEEK_END);
    size_t total = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    signed char *steps = malloc(total);
    if (!steps || fread(steps, 1, total, f) != total) return 2;
    fclose(f);
    size_t len = total / n;

    sy_client *c = NULL;
    sy_model *m = NULL;
    sy_session *s = NULL;
    if (check(sy_connect_unix(argv[1], &c), "connect")) return 1;
    if (check(sy_load_file(c, argv[2], &m), "load")) return 1;
    sy_tensor_info in;
    if (check(sy_model_input(m, 0, &in), "input")) return 1;
    if (check(sy_session_open(m, &s), "open session")) return 1;
    printf("session %llu\n", (unsigned long long)sy_session_id(s));

    unsigned char out[64];
    size_t got = 0, out_len = 0;
    unsigned char *all = malloc(n * sizeof out);
    for (size_t t = 0; t < n; t++) {
        if (step(s, &in, steps + t * len, len, out, sizeof out, &got)) return 1;
        memcpy(all + out_len, out, got);
        out_len += got;
    }
    FILE *o = fopen(argv[5], "wb");
    if (!o || fwrite(all, 1, out_len, o) != out_len) return 1;
    fclose(o);

    /* A reset starts a fresh stream: step 0 answers as it did first. */
    if (check(sy_session_reset(s), "reset")) return 1;
    if (step(s, &in, steps, len, out, sizeof out, &got)) return 1;
    printf("after reset %s\n", memcmp(out, all, got) == 0 ? "fresh" : "NOT fresh");

    if (check(sy_session_close(s), "close")) return 1;
    sy_tensor t = {in.dtype, in.rank, in.shape, steps, len, NULL};
    sy_outputs *none = NULL;
    sy_status closed = sy_session_run(s, &t, 1, NULL, &none);
    printf("after close: %s\n", sy_status_name(closed));
    sy_session_free(s);
    sy_model_free(m);
    sy_client_free(c);
    free(all);
    free(steps);
    return 0;
}
