/* progress.h — one-line progress (item i/N, MB/s, ETA) on stderr when it is a TTY;
 * silent when piped, so logs and CI output stay clean. */
#ifndef LP_PROGRESS_H
#define LP_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    bool enabled;
    double t_start;
    uint64_t bytes_total;
    int n_items;
} lp_progress;

double lp_now(void); /* monotonic seconds */
void lp_progress_start(lp_progress *p, int n_items, uint64_t bytes_total, bool quiet);
void lp_progress_update(lp_progress *p, int item, const char *label, uint64_t bytes_done);
void lp_progress_finish(lp_progress *p);

#endif
