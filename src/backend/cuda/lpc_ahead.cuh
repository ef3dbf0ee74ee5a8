/* lpc_ahead.cuh — running the next decode step's graph launch ahead of its token.
 *
 * A decode step's token comes from the previous step's logits, so the host can only
 * launch step N+1 once step N is done, and launching a decode graph (~280 kernel
 * nodes) costs the host ~0.2 ms on the H100, all of it GPU idle time: ~7% of a
 * Qwen3-8B Q4_K_M step. Instead, when the host reads step N's logits, the backend
 * *arms* step N+1: it enqueues, behind step N, a wait on a word of pinned host memory
 * (cuStreamWaitValue32: the GPU's front end waits, no SM spins), the upload of the
 * step's batch (tokens | pos | slot) from pinned memory, and the graph. The launch
 * cost is paid while step N runs. When the next step's op list turns out to be that
 * graph's, `take` writes its batch and the word: the GPU starts within microseconds.
 *
 * Anything else *cancels*: the word is written with the staging buffer still holding
 * the harmless batch armed with it — token 0 at each token's position + 1 in its
 * slot, the position that token's next step would write, beyond everything its slot
 * holds — so the armed step runs (one wasted step of GPU time, before the new work)
 * and leaves only garbage where no later step reads before writing. That needs one
 * token per slot and position + 1 inside the context (lpc_ahead_harmless).
 *
 * An armed step blocks its stream until the word is written, and cudaFree, cudaMalloc
 * and stream synchronisation would wait for it: every backend entry point that may
 * allocate, free or synchronise first cancels all armed steps of the process
 * (lpc_ahead_settle_all: a registry under a mutex, also run at exit). */
#ifndef LPC_AHEAD_CUH
#define LPC_AHEAD_CUH

#include <cuda.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef CUresult (*lpc_wait_value_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);

typedef struct lpc_ahead {
    lpc_wait_value_fn wait; /* cuStreamWaitValue32; NULL: never arms */
    uint32_t *gate;         /* pinned, mapped: the armed step runs once gate - seq >= 0 */
    CUdeviceptr gate_dev;
    uint32_t seq;
    int32_t *stage[2];      /* pinned [3 * cap]: the armed step's batch, by seq parity (the
                               previous step's upload may still be reading the other one) */
    int cap;
    const void *armed;      /* the armed graph's key (NULL: nothing armed) */
    int n;                  /* its batch size */
    bool clobbered;         /* a cancelled step overwrote the batch arrays (and rope tables) */
    long taken, cancelled;  /* statistics */
    struct lpc_ahead *next; /* registry of live instances */
} lpc_ahead;

static pthread_mutex_t lpc_ahead_mu = PTHREAD_MUTEX_INITIALIZER;
static lpc_ahead *lpc_ahead_live;

/* Release the armed step (caller holds the mutex): the GPU goes on with the batch in
 * its staging buffer. */
static inline void lpc_ahead_release(lpc_ahead *a) {
    __atomic_store_n(a->gate, a->seq, __ATOMIC_RELEASE);
    a->armed = NULL;
}

/* Cancel every armed step of the process (they run on their harmless batches). */
static inline void lpc_ahead_settle_all(void) {
    pthread_mutex_lock(&lpc_ahead_mu);
    for (lpc_ahead *a = lpc_ahead_live; a; a = a->next)
        if (a->armed) {
            lpc_ahead_release(a);
            a->clobbered = true;
            a->cancelled++;
        }
    pthread_mutex_unlock(&lpc_ahead_mu);
}

static void lpc_ahead_at_exit(void) { lpc_ahead_settle_all(); }

/* Whether a cancelled step ran since the last call: the device's batch arrays hold its
 * harmless batch, not the current one. */
static inline bool lpc_ahead_clobbered(lpc_ahead *a) {
    pthread_mutex_lock(&lpc_ahead_mu);
    const bool was = a->clobbered;
    a->clobbered = false;
    pthread_mutex_unlock(&lpc_ahead_mu);
    return was;
}

/* Set up (wait stays NULL where the driver lacks stream memory operations, or
 * LP_CUDA_AHEAD=0 asked so): false only when host memory could not be pinned. */
static inline bool lpc_ahead_init(lpc_ahead *a, bool want) {
    memset(a, 0, sizeof *a);
    if (!want) return true;
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &fn, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuStreamWaitValue32", &fn, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
        cudaGetLastError();
        return true;
    }
    void *dev = NULL;
    if (cudaHostAlloc((void **)&a->gate, 64, cudaHostAllocMapped) != cudaSuccess ||
        cudaHostGetDevicePointer(&dev, a->gate, 0) != cudaSuccess) {
        cudaGetLastError();
        if (a->gate) cudaFreeHost(a->gate);
        a->gate = NULL;
        return false;
    }
    *a->gate = 0;
    a->gate_dev = (CUdeviceptr)(uintptr_t)dev;
    a->wait = (lpc_wait_value_fn)fn;
    static bool registered;
    pthread_mutex_lock(&lpc_ahead_mu);
    if (!registered) registered = atexit(lpc_ahead_at_exit) == 0;
    a->next = lpc_ahead_live;
    lpc_ahead_live = a;
    pthread_mutex_unlock(&lpc_ahead_mu);
    return true;
}

static inline void lpc_ahead_free(lpc_ahead *a) {
    pthread_mutex_lock(&lpc_ahead_mu);
    if (a->armed) lpc_ahead_release(a);
    for (lpc_ahead **p = &lpc_ahead_live; *p; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    pthread_mutex_unlock(&lpc_ahead_mu);
    for (int i = 0; i < 2; i++)
        if (a->stage[i]) cudaFreeHost(a->stage[i]);
    if (a->gate) cudaFreeHost(a->gate);
    memset(a, 0, sizeof *a);
}

/* Staging for batches of up to cap tokens (call with nothing armed: it frees). */
static inline bool lpc_ahead_reserve(lpc_ahead *a, int cap) {
    if (!a->wait || cap <= a->cap) return true;
    for (int i = 0; i < 2; i++) {
        if (a->stage[i]) cudaFreeHost(a->stage[i]);
        a->stage[i] = NULL;
        if (cudaHostAlloc((void **)&a->stage[i], 3 * (size_t)cap * sizeof(int32_t), cudaHostAllocDefault) != cudaSuccess) {
            cudaGetLastError();
            a->stage[i] = NULL;
            a->cap = 0;
            return false;
        }
    }
    a->cap = cap;
    return true;
}

/* The batch a cancelled armed step runs in place of batch b (tokens | pos | slot, n
 * tokens): token 0 at pos + 1 of each token's slot. False when that could touch what
 * a slot holds: two tokens in one slot (a prefill chunk: pos + 1 is its next token's)
 * or a position at the end of the context. */
static inline bool lpc_ahead_harmless(const int32_t *b, int n, int n_ctx, int32_t *out) {
    for (int i = 0; i < n; i++) {
        if (b[n + i] + 1 >= n_ctx) return false;
        for (int j = 0; j < i; j++)
            if (b[2 * n + j] == b[2 * n + i]) return false;
        out[i] = 0;
        out[n + i] = b[n + i] + 1;
        out[2 * n + i] = b[2 * n + i];
    }
    return true;
}

/* Arm `exec` (identified by key) on st behind what st already holds, as the step after
 * batch b; d_batch receives the batch. False (nothing enqueued) when the batch does not
 * allow it. */
static inline bool lpc_ahead_arm(lpc_ahead *a, cudaStream_t st, const void *key, cudaGraphExec_t exec, int32_t *d_batch,
                                 const int32_t *b, int n, int n_ctx) {
    if (!a->wait || n > a->cap || a->armed) return false;
    int32_t *stage = a->stage[(a->seq + 1) & 1];
    if (!lpc_ahead_harmless(b, n, n_ctx, stage)) return false;
    pthread_mutex_lock(&lpc_ahead_mu);
    const uint32_t seq = a->seq + 1;
    bool ok = a->wait((CUstream)st, a->gate_dev, seq, CU_STREAM_WAIT_VALUE_GEQ) == CUDA_SUCCESS;
    if (ok) {
        a->seq = seq; /* from here on the stream waits for it: released whatever fails below */
        a->armed = key;
        a->n = n;
        ok = cudaMemcpyAsync(d_batch, stage, 3 * (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, st) == cudaSuccess &&
             cudaGraphLaunch(exec, st) == cudaSuccess;
        if (!ok) lpc_ahead_release(a);
    }
    pthread_mutex_unlock(&lpc_ahead_mu);
    if (!ok) cudaGetLastError();
    return ok;
}

/* The step now due is the armed one (same key, n tokens of batch b): start it with b.
 * False when nothing matching is armed (the caller cancels and launches normally). */
static inline bool lpc_ahead_take(lpc_ahead *a, const void *key, const int32_t *b, int n) {
    pthread_mutex_lock(&lpc_ahead_mu);
    const bool match = a->armed && a->armed == key && a->n == n;
    if (match) {
        memcpy(a->stage[a->seq & 1], b, 3 * (size_t)n * sizeof(int32_t));
        lpc_ahead_release(a);
        a->clobbered = false; /* this step uploads the real batch and redoes the tables */
        a->taken++;
    }
    pthread_mutex_unlock(&lpc_ahead_mu);
    return match;
}

#endif
