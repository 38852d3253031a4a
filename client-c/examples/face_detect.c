/*
 * face_detect: runs MediaPipe face detection through switchyardd with libswitchyard,
 * once with inline tensors and once through a shared-memory pool, checks both give
 * the same bytes, counts faces, writes the outputs, and shows a clean error.
 *
 *   cc -Iclient-c/include face_detect.c -Ltarget/debug -lswitchyard -o face_detect
 *   face_detect SOCKET MODEL.tflite INPUT.f32 OUTDIR
 *
 * INPUT.f32 holds the 1x128x128x3 float32 frame (raw little-endian); OUTDIR receives
 * output_<i>.bin with each output's raw bytes.
 */
#include <math.h>
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

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s SOCKET MODEL INPUT.f32 OUTDIR\n", argv[0]);
        return 2;
    }
    size_t frame_len = 0;
    void *frame = read_file(argv[3], &frame_len);
    if (!frame) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 1;
    }
    sy_client *client = NULL;
    sy_model *model = NULL;
    if (check(sy_connect_unix(argv[1], &client), "connect")) return 1;
    if (check(sy_load_file(client, argv[2], &model), "load")) return 1;

    sy_tensor_info in;
    if (check(sy_model_input(model, 0, &in), "input info")) return 1;
    printf("model %s: input %s rank %zu [%llu,%llu,%llu,%llu]\n", sy_model_id(model), in.name,
           in.rank, (unsigned long long)in.shape[0], (unsigned long long)in.shape[1],
           (unsigned long long)in.shape[2], (unsigned long long)in.shape[3]);

    /* Inline, as a realtime request with a generous deadline. */
    sy_tensor x = {SY_FLOAT32, in.rank, in.shape, frame, frame_len, NULL};
    sy_run_options opts = {SY_PRIORITY_REALTIME, 10000, 0, "c-face-1", NULL};
    sy_outputs *inline_out = NULL;
    if (check(sy_run(model, &x, 1, &opts, &inline_out), "run inline")) return 1;
    size_t n_out = sy_outputs_count(inline_out);

    /* Shared memory: the frame and both outputs live in one pool. */
    sy_pool *pool = NULL;
    if (check(sy_pool_create(client, 1 << 20, &pool), "pool")) return 1;
    sy_slice *in_slice = NULL;
    if (check(sy_pool_alloc(pool, frame_len, &in_slice), "alloc input")) return 1;
    memcpy(sy_slice_data(in_slice), frame, frame_len);
    sy_slice *out_slices[8] = {0};
    for (size_t i = 0; i < n_out && i < 8; i++) {
        sy_tensor_info o;
        if (check(sy_model_output(model, i, &o), "output info")) return 1;
        size_t bytes = 4;
        for (size_t d = 0; d < o.rank; d++) bytes *= (size_t)o.shape[d];
        if (check(sy_pool_alloc(pool, bytes, &out_slices[i]), "alloc output")) return 1;
    }
    sy_tensor xs = {SY_FLOAT32, in.rank, in.shape, NULL, 0, in_slice};
    sy_run_options shm_opts = {SY_PRIORITY_INTERACTIVE, 0, 0, NULL, out_slices};
    sy_outputs *shm_out = NULL;
    if (check(sy_run(model, &xs, 1, &shm_opts, &shm_out), "run shm")) return 1;

    char path[4096];
    int faces = 0;
    float best = 0.0f;
    for (size_t i = 0; i < n_out; i++) {
        sy_tensor a, b;
        if (check(sy_outputs_get(inline_out, i, &a), "output")) return 1;
        if (check(sy_outputs_get(shm_out, i, &b), "shm output")) return 1;
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
            fprintf(stderr, "output %zu differs between inline and shared memory\n", i);
            return 1;
        }
        snprintf(path, sizeof path, "%s/output_%zu.bin", argv[4], i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(a.data, 1, a.len, f) != a.len) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
        fclose(f);
        /* The second output holds one logit per anchor: a face where sigmoid > 0.5. */
        if (i == 1) {
            const float *logits = a.data;
            for (size_t k = 0; k < a.len / 4; k++) {
                float p = 1.0f / (1.0f + expf(-logits[k]));
                if (p > 0.5f) faces++;
                if (p > best) best = p;
            }
        }
    }
    uint64_t queue_us = 0, run_us = 0;
    sy_outputs_timing(inline_out, &queue_us, &run_us);
    printf("outputs: %zu, inline == shm, anchors above 0.5: %d (best %.3f), run %llu us\n",
           n_out, faces, best, (unsigned long long)run_us);

    /* A frame of the wrong size is refused with a code and a message. */
    uint64_t wrong_shape[4] = {1, 64, 64, 3};
    sy_tensor wrong = {SY_FLOAT32, 4, wrong_shape, frame, 64 * 64 * 3 * 4, NULL};
    sy_outputs *none = NULL;
    sy_status s = sy_run(model, &wrong, 1, NULL, &none);
    printf("wrong shape: %s: %s\n", sy_status_name(s), sy_last_error());

    sy_outputs_free(inline_out);
    sy_outputs_free(shm_out);
    for (size_t i = 0; i < 8; i++) sy_slice_free(out_slices[i]);
    sy_slice_free(in_slice);
    sy_pool_free(pool);
    if (check(sy_model_unload(model), "unload")) return 1;
    sy_model_free(model);
    sy_client_free(client);
    free(frame);
    return s == SY_INVALID_ARGUMENT ? 0 : 1;
}
