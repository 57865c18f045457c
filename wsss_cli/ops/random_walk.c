/* The random walk's CPU kernels (ops/random_walk.py, backend "native"), float32.
 *
 * Built on first use by ops/native.py with the machine's C compiler and loaded with
 * ctypes; without a compiler the walk runs in torch instead (the same results).
 *
 * Grid pixel p = (y, x); the disk's m offsets (dy[j], dx[j]) name its neighbours. The disk
 * is sorted and symmetric: slot m - 1 - j is slot j's opposite, slot m / 2 is p itself
 * and the slots after it point forward (dy > 0, or dy = 0 and dx > 0).
 * rows [h, w, m]: A_pq / d_p for q = p + (dy[j], dx[j]) inside the grid, 0 outside.
 * Scores live on a zero-padded grid [h + 2 pad, w + 2 pad, kp], kp a multiple of 8, so
 * every neighbour of an inside pixel is a constant flat offset away: no bounds checks,
 * and each neighbour's kp scores are contiguous vectors.
 * Both entry points split the image rows into one band per thread.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef float v8 __attribute__((vector_size(32), aligned(4)));

/* ---- threads: one band of image rows each, a barrier between phases ---- */

typedef struct {
  atomic_int arrived, generation;
  int threads;
} barrier_t;

static void barrier_wait(barrier_t *b) {
  int generation = atomic_load(&b->generation);
  if (atomic_fetch_add(&b->arrived, 1) == b->threads - 1) {
    atomic_store(&b->arrived, 0);
    atomic_fetch_add(&b->generation, 1);
    return;
  }
  /* spin briefly (a walk step is tens of microseconds), then give the core away */
  for (int spins = 0; atomic_load(&b->generation) == generation; spins++)
    if (spins > 1000) sched_yield();
}

typedef struct task task_t;
typedef void (*band_fn)(task_t *task, int y0, int y1, barrier_t *barrier);

struct task {
  band_fn run;
  const float *f;
  float *rows, *a, *b;
  const int *dy, *dx;
  const long *off;
  int m, h, w, c, pad, kp, steps;
  float scale;
  barrier_t barrier;
  int threads;
  atomic_int ready, next, failed;
};

static void *band_thread(void *arg) {
  task_t *task = arg;
  while (!atomic_load(&task->ready)) sched_yield();
  int t = atomic_fetch_add(&task->next, 1);
  int y0 = (int)((long)task->h * t / task->threads);
  int y1 = (int)((long)task->h * (t + 1) / task->threads);
  task->run(task, y0, y1, &task->barrier);
  return NULL;
}

/* task->run on one band per thread, this thread one of them (as many as could be
 * started, at most one per image row); 0, or -1 if a band failed */
static int in_bands(task_t *task, int threads) {
  if (threads > task->h) threads = task->h;
  if (threads < 1) threads = 1;
  atomic_init(&task->ready, 0);
  atomic_init(&task->next, 0);
  atomic_init(&task->failed, 0);
  atomic_init(&task->barrier.arrived, 0);
  atomic_init(&task->barrier.generation, 0);
  pthread_t others[threads];
  int started = 0;
  while (started < threads - 1 && !pthread_create(&others[started], NULL, band_thread, task))
    started++;
  task->threads = task->barrier.threads = started + 1;
  atomic_store(&task->ready, 1);
  band_thread(task);
  for (int i = 0; i < started; i++) pthread_join(others[i], NULL);
  return atomic_load(&task->failed) ? -1 : 0;
}

/* ---- the transition rows ---- */

/* the columns x whose neighbour x + dx is inside a row of width w: [*x0, *x1) */
static inline void inside_columns(int dx, int w, int *x0, int *x1) {
  *x0 = dx < 0 ? -dx : 0;
  *x1 = dx > 0 ? w - dx : w;
}

static void rows_band(task_t *task, int y0, int y1, barrier_t *barrier) {
  const int m = task->m, h = task->h, w = task->w, c = task->c;
  const int *dy = task->dy, *dx = task->dx;
  const float *f = task->f;
  float *rows = task->rows;
  const long plane = (long)h * w;
  float *dist = malloc(sizeof(float) * (size_t)m * w);
  if (!dist) atomic_store(&task->failed, 1);
  for (int y = y0; y < y1 && dist; y++) {
    for (int j = m / 2 + 1; j < m; j++)
      for (int x = 0; x < w; x++) dist[(long)j * w + x] = 0.f;
    /* channels outer: one image row of every channel meets the rows below it in cache;
     * four channels a pass, so that dist is loaded and stored a quarter as often */
    for (int k = 0; k < c; k += 4) {
      const float *here = f + k * plane + (long)y * w;
      const int n = c - k < 4 ? c - k : 4;
      for (int j = m / 2 + 1; j < m; j++) {
        if (y + dy[j] >= h) continue;
        const float *restrict there = here + (long)dy[j] * w + dx[j];
        float *restrict d = dist + (long)j * w;
        int x0, x1;
        inside_columns(dx[j], w, &x0, &x1);
        if (n == 4) {
          const float *h1 = here + plane, *h2 = here + 2 * plane, *h3 = here + 3 * plane;
          const float *t1 = there + plane, *t2 = there + 2 * plane, *t3 = there + 3 * plane;
          for (int x = x0; x < x1; x++)
            d[x] += (fabsf(here[x] - there[x]) + fabsf(h1[x] - t1[x])) +
                    (fabsf(h2[x] - t2[x]) + fabsf(h3[x] - t3[x]));
        } else {
          for (int i = 0; i < n; i++)
            for (int x = x0; x < x1; x++) d[x] += fabsf(here[i * plane + x] - there[i * plane + x]);
        }
      }
    }
    /* each pair once: its affinity goes to both ends (the lower end may be another band's
     * pixel, but that slot has no other writer) */
    for (int j = m / 2 + 1; j < m; j++) {
      if (y + dy[j] >= h) continue;
      int x0, x1;
      inside_columns(dx[j], w, &x0, &x1);
      for (int x = x0; x < x1; x++) {
        float a = expf(task->scale * dist[(long)j * w + x]);
        rows[((long)y * w + x) * m + j] = a;
        rows[((long)(y + dy[j]) * w + x + dx[j]) * m + (m - 1 - j)] = a;
      }
    }
  }
  free(dist);
  barrier_wait(barrier);
  for (long p = (long)y0 * w; p < (long)y1 * w; p++) {
    float *row = rows + p * m, sum = 0.f;
    row[m / 2] = 1.f;
    for (int j = 0; j < m; j++) sum += row[j];
    for (int j = 0; j < m; j++) row[j] /= sum;
  }
}

/* rows (zero-filled by the caller) of D^-1 A: a_pq = exp(scale * sum_c |f_cp - f_cq|)
 * (scale = -beta / C), a_pp = 1, from f [c, h, w]. Returns -1 if out of memory. */
int wsss_transition_rows(const float *f, float *rows, const int *dy, const int *dx, int m, int h,
                         int w, int c, float scale, int threads) {
  task_t task = {.run = rows_band, .f = f, .rows = rows, .dy = dy, .dx = dx, .m = m, .h = h,
                 .w = w, .c = c, .scale = scale};
  return in_bands(&task, threads);
}

/* ---- the steps ---- */

/* PX pixels of a row at once: their independent sums hide the multiply-add latency */
#define PX 4

/* rows y0..y1 of one step, kp = 8 * V: dst[p] = sum_j rows[p, j] * src[p + off[j]] */
#define STEP(V)                                                                              \
  static void step_##V(const float *restrict src, float *restrict dst,                       \
                       const float *restrict rows, const long *restrict off, int m, int y0,  \
                       int y1, int w, int pad) {                                             \
    const long wp = w + 2 * pad;                                                             \
    for (int y = y0; y < y1; y++) {                                                          \
      int x = 0;                                                                             \
      for (; x + PX <= w; x += PX) {                                                         \
        const long p = ((y + pad) * wp + x + pad) * (8 * V);                                 \
        const float *r = rows + ((long)y * w + x) * m;                                       \
        v8 acc[PX][V] = {{{0}}};                                                             \
        for (int j = 0; j < m; j++) {                                                        \
          const v8 *s = (const v8 *)(src + p + off[j]);                                      \
          for (int i = 0; i < PX; i++)                                                       \
            for (int k = 0; k < V; k++) acc[i][k] += r[i * m + j] * s[i * V + k];            \
        }                                                                                    \
        v8 *d = (v8 *)(dst + p);                                                             \
        for (int i = 0; i < PX; i++)                                                         \
          for (int k = 0; k < V; k++) d[i * V + k] = acc[i][k];                              \
      }                                                                                      \
      for (; x < w; x++) {                                                                   \
        const long p = ((y + pad) * wp + x + pad) * (8 * V);                                 \
        const float *r = rows + ((long)y * w + x) * m;                                       \
        v8 acc[V] = {{0}};                                                                   \
        for (int j = 0; j < m; j++) {                                                        \
          const v8 *s = (const v8 *)(src + p + off[j]);                                      \
          for (int k = 0; k < V; k++) acc[k] += r[j] * s[k];                                 \
        }                                                                                    \
        v8 *d = (v8 *)(dst + p);                                                             \
        for (int k = 0; k < V; k++) d[k] = acc[k];                                           \
      }                                                                                      \
    }                                                                                        \
  }
STEP(1)
STEP(2)
STEP(3)
STEP(4)

static void steps_band(task_t *task, int y0, int y1, barrier_t *barrier) {
  for (int t = 0; t < task->steps; t++) {
    const float *src = t % 2 ? task->b : task->a;
    float *dst = t % 2 ? task->a : task->b;
    const int m = task->m, w = task->w, pad = task->pad;
    switch (task->kp) {
      case 8: step_1(src, dst, task->rows, task->off, m, y0, y1, w, pad); break;
      case 16: step_2(src, dst, task->rows, task->off, m, y0, y1, w, pad); break;
      case 24: step_3(src, dst, task->rows, task->off, m, y0, y1, w, pad); break;
      default: step_4(src, dst, task->rows, task->off, m, y0, y1, w, pad); break;
    }
    barrier_wait(barrier);
  }
}

/* steps of the walk between the padded score grids a (the start) and b, kp one of
 * 8, 16, 24, 32; returns which holds the result (0: a, 1: b), or -1 for another kp. */
int wsss_walk(float *a, float *b, const float *rows, const int *dy, const int *dx, int m, int h,
              int w, int pad, int kp, int steps, int threads) {
  if (kp != 8 && kp != 16 && kp != 24 && kp != 32) return -1;
  long off[m];
  for (int j = 0; j < m; j++) off[j] = ((long)dy[j] * (w + 2 * pad) + dx[j]) * kp;
  task_t task = {.run = steps_band, .rows = (float *)rows, .a = a, .b = b, .off = off, .m = m,
                 .h = h, .w = w, .pad = pad, .kp = kp, .steps = steps};
  in_bands(&task, threads);
  return steps % 2;
}
