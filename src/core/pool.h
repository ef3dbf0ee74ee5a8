/* pool.h — a persistent pthread pool running "for task in 0..n" loops.
 *
 * Converters quantize tensors in parallel and the CPU backend splits matmul rows
 * with it; threads are created once and reused because a forward step issues
 * hundreds of short parallel loops. */
#ifndef LP_POOL_H
#define LP_POOL_H

typedef struct lp_pool lp_pool;
/* fn(ctx, task, thread) is called once for each task in [0, n_tasks), on n_threads threads
 * (the caller's thread is thread 0). */
typedef void (*lp_task_fn)(void *ctx, int task, int thread);

lp_pool *lp_pool_create(int n_threads); /* n_threads <= 0: number of online CPUs */
void lp_pool_free(lp_pool *p);
int lp_pool_threads(const lp_pool *p);
void lp_pool_run(lp_pool *p, int n_tasks, lp_task_fn fn, void *ctx);
int lp_cpu_count(void);

#endif
