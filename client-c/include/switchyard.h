/*
 * switchyard.h — the C client of switchyardd, the Switchyard on-device ML daemon.
 * Link with -lswitchyard (libswitchyard.so, built from client-c/ in the Switchyard
 * repository). Written by hand; client-c/src/lib.rs implements it and the test
 * tests/c_client.rs builds and runs client-c/examples/face_detect.c against a real
 * daemon.
 *
 * Conventions:
 *  - Every function that can fail returns an sy_status: SY_OK (0), a gRPC status code
 *    the daemon answered with (1..16), or a client-side code (100..). The message of the
 *    last failure on the calling thread is sy_last_error().
 *  - Objects are opaque and freed by their sy_*_free function; freeing NULL is a no-op.
 *    A model, pool or outputs object keeps its client's connection alive.
 *  - Tensors are little-endian, row-major element bytes.
 *  - Calls block the calling thread. One client may be used from several threads.
 */
#ifndef SWITCHYARD_H
#define SWITCHYARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sy_status {
    SY_OK = 0,
    /* gRPC status codes, as the daemon answered. */
    SY_CANCELLED = 1,
    SY_UNKNOWN = 2,
    SY_INVALID_ARGUMENT = 3,
    SY_DEADLINE_EXCEEDED = 4,
    SY_NOT_FOUND = 5,
    SY_ALREADY_EXISTS = 6,
    SY_PERMISSION_DENIED = 7,
    SY_RESOURCE_EXHAUSTED = 8,
    SY_FAILED_PRECONDITION = 9,
    SY_ABORTED = 10,
    SY_OUT_OF_RANGE = 11,
    SY_UNIMPLEMENTED = 12,
    SY_INTERNAL = 13,
    SY_UNAVAILABLE = 14,
    SY_DATA_LOSS = 15,
    SY_UNAUTHENTICATED = 16,
    /* Client-side failures. */
    SY_ERR_CONNECT = 100,  /* the daemon's socket could not be reached */
    SY_ERR_IO = 101,       /* a local file could not be read */
    SY_ERR_SHM = 102,      /* a shared-memory region could not be made or registered */
    SY_ERR_ARGUMENT = 103, /* a NULL pointer, an index out of range, bad UTF-8, ... */
} sy_status;

/* Element types: the same numbers as the gRPC API's DataType. */
typedef enum sy_dtype {
    SY_FLOAT32 = 1,
    SY_FLOAT16 = 2,
    SY_INT32 = 3,
    SY_UINT8 = 4,
    SY_INT64 = 5,
    SY_BOOL = 6,
    SY_INT16 = 7,
    SY_INT8 = 8,
    SY_FLOAT64 = 9,
    SY_UINT64 = 10,
    SY_UINT32 = 11,
    SY_UINT16 = 12,
} sy_dtype;

typedef enum sy_priority {
    SY_PRIORITY_INTERACTIVE = 0, /* the default */
    SY_PRIORITY_REALTIME = 1,
    SY_PRIORITY_BACKGROUND = 3,
} sy_priority;

typedef struct sy_client sy_client;
typedef struct sy_model sy_model;
typedef struct sy_outputs sy_outputs;
typedef struct sy_pool sy_pool;
typedef struct sy_slice sy_slice;
typedef struct sy_session sy_session;

/* A tensor passed in or out. For an input, set either `data` (sent inline) or `slice`
 * (bytes already written into a pool slice; `data` is ignored). For an output, `data`
 * points at the bytes (inline, or inside the slice the daemon wrote). */
typedef struct sy_tensor {
    sy_dtype dtype;
    size_t rank;
    const uint64_t *shape;
    const void *data;
    size_t len; /* bytes */
    sy_slice *slice;
} sy_tensor;

/* Name, type and shape of a model input or output; valid while the model lives. */
typedef struct sy_tensor_info {
    const char *name;
    sy_dtype dtype;
    size_t rank;
    const uint64_t *shape;
} sy_tensor_info;

typedef struct sy_run_options {
    sy_priority priority;
    /* Relative deadline in milliseconds; 0: none. A hopeless one is refused with
     * SY_DEADLINE_EXCEEDED. */
    uint64_t deadline_ms;
    /* Non-zero: resize the model's inputs to the given shapes (otherwise a shape that
     * differs from the model's is refused with SY_INVALID_ARGUMENT). */
    int allow_resize;
    /* An id of the caller's choosing for the daemon's logs; NULL: none. */
    const char *request_id;
    /* NULL for inline outputs, or one slice per model output to write them into. */
    sy_slice *const *outputs;
} sy_run_options;

/* The message of the last failure on this thread ("" if none); valid until the next
 * call on this thread. */
const char *sy_last_error(void);
/* A short name for a status ("INVALID_ARGUMENT", "ERR_SHM", ...). */
const char *sy_status_name(sy_status status);

/* Connects over the daemon's Unix socket (the tenant is this process's uid); NULL
 * path: SWITCHYARD_SOCKET, else /run/switchyard/switchyard.sock. */
sy_status sy_connect_unix(const char *path, sy_client **out);
/* Connects over TCP ("host:port") with a bearer token configured in the daemon. */
sy_status sy_connect_tcp(const char *address, const char *token, sy_client **out);
void sy_client_free(sy_client *client);

/* Loads a .tflite file (named after it) or bytes; returns a handle. */
sy_status sy_load_file(sy_client *client, const char *path, sy_model **out);
sy_status sy_load_bytes(sy_client *client, const char *name, const void *bytes, size_t len,
                        sy_model **out);
/* Frees the handle; the model stays loaded for this tenant (see sy_model_unload). */
void sy_model_free(sy_model *model);
/* Unloads the model from the daemon for this tenant (the handle must still be freed). */
sy_status sy_model_unload(sy_model *model);
const char *sy_model_id(const sy_model *model);
size_t sy_model_input_count(const sy_model *model);
size_t sy_model_output_count(const sy_model *model);
sy_status sy_model_input(const sy_model *model, size_t index, sy_tensor_info *out);
sy_status sy_model_output(const sy_model *model, size_t index, sy_tensor_info *out);

/* Runs the model once on `n_inputs` inputs; `options` may be NULL. */
sy_status sy_run(sy_model *model, const sy_tensor *inputs, size_t n_inputs,
                 const sy_run_options *options, sy_outputs **out);
/* Sessions (docs/daemon.md, "Sessions"): one stream's state over a model, which no other
 * session or tenant sees. Runs on a session continue its stream (a streaming model's
 * variables), one at a time. The daemon closes it on sy_session_close, when the model is
 * unloaded, or when this process exits; sy_session_free only frees the handle. */
sy_status sy_session_open(sy_model *model, sy_session **out);
/* The tenant's id for the session (0 for NULL). */
uint64_t sy_session_id(const sy_session *session);
/* As sy_run, on the session's stream. */
sy_status sy_session_run(sy_session *session, const sy_tensor *inputs, size_t n_inputs,
                         const sy_run_options *options, sy_outputs **out);
/* Starts the stream afresh. */
sy_status sy_session_reset(sy_session *session);
sy_status sy_session_close(sy_session *session);
void sy_session_free(sy_session *session);

size_t sy_outputs_count(const sy_outputs *outputs);
/* Output `index`; its pointers are valid until sy_outputs_free (and, for outputs in
 * shared memory, while their slice lives). */
sy_status sy_outputs_get(const sy_outputs *outputs, size_t index, sy_tensor *out);
/* Microseconds waiting in the daemon's queues and running. */
void sy_outputs_timing(const sy_outputs *outputs, uint64_t *queue_us, uint64_t *run_us);
void sy_outputs_free(sy_outputs *outputs);

/* A shared-memory pool of `size` bytes registered with the daemon (Unix socket only;
 * docs/shm-protocol.md). Slices are 64-byte aligned and return to the pool when freed. */
sy_status sy_pool_create(sy_client *client, size_t size, sy_pool **out);
void sy_pool_free(sy_pool *pool);
sy_status sy_pool_alloc(sy_pool *pool, size_t len, sy_slice **out);
/* The slice's bytes: write inputs here before a run, read outputs after it. */
void *sy_slice_data(sy_slice *slice);
size_t sy_slice_len(const sy_slice *slice);
void sy_slice_free(sy_slice *slice);

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_H */
