/* The AOT header's communicator (tests/cli/aot_distributed.cmake builds
 * this against mlp.sg's data-parallel Adam step, compiled as mlp_dp).
 *
 * One process plays rank 0 of a job of 2 whose other rank holds the same
 * data: all_reduce sum doubles, mean keeps the values, all_gather repeats
 * this rank's bytes, broadcast (from rank 0) leaves them. So the distributed
 * handle must train exactly like stepc_mlp_dp_create (whose collectives are
 * copies), and the callbacks must carry the gradients (every model param's
 * element once per step) and the loss. Also: a mismatched graph on "rank 1"
 * and a failing callback are reported, not crashed on. */
#include "mlp_dp.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  int all_reduces, broadcasts, all_gathers;
  int64_t reduced_floats;
  int fail_with;     /* all_reduce returns this */
  int other_differs; /* all_gather: "rank 1" sends a different value */
} fake_job;

static int fake_all_reduce(void *context, const void *in, void *out, int64_t count, int dtype,
                           int op) {
  fake_job *job = (fake_job *)context;
  if (job->fail_with)
    return job->fail_with;
  if (dtype != STEPC_F32)
    return 99;
  const float *from = (const float *)in;
  float *to = (float *)out;
  for (int64_t i = 0; i < count; ++i)
    to[i] = op == STEPC_SUM ? 2 * from[i] : (from[i] + from[i]) / 2;
  job->all_reduces++;
  job->reduced_floats += count;
  return 0;
}

static int fake_broadcast(void *context, void *data, int64_t bytes, int root) {
  (void)data;
  (void)bytes;
  ((fake_job *)context)->broadcasts++;
  return root == 0 ? 0 : 98;
}

static int fake_all_gather(void *context, const void *in, void *out, int64_t bytes) {
  fake_job *job = (fake_job *)context;
  memcpy(out, in, (size_t)bytes);
  memcpy((char *)out + bytes, in, (size_t)bytes);
  if (job->other_differs)
    ((unsigned char *)out)[bytes] ^= 1;
  job->all_gathers++;
  return 0;
}

static int fail(const char *what, const char *error) {
  fprintf(stderr, "FAILED: %s: %s\n", what, error);
  return 1;
}

int main(void) {
  static float x[STEPC_MLP_DP_INPUT_X_NUMEL], w1[STEPC_MLP_DP_PARAM_W1_NUMEL],
      w1_alone[STEPC_MLP_DP_PARAM_W1_NUMEL];
  static int32_t y[STEPC_MLP_DP_INPUT_Y_NUMEL];
  for (int i = 0; i < STEPC_MLP_DP_INPUT_X_NUMEL; ++i)
    x[i] = (float)((37 * i) % 101) / 100.0f - 0.5f;
  for (int i = 0; i < STEPC_MLP_DP_INPUT_Y_NUMEL; ++i)
    y[i] = i % 10;
  const int64_t gradient_floats = STEPC_MLP_DP_PARAM_W1_NUMEL + STEPC_MLP_DP_PARAM_B1_NUMEL +
                                  STEPC_MLP_DP_PARAM_W2_NUMEL + STEPC_MLP_DP_PARAM_B2_NUMEL +
                                  STEPC_MLP_DP_PARAM_W3_NUMEL + STEPC_MLP_DP_PARAM_B3_NUMEL;

  fake_job job = {0};
  stepc_communicator comm = {&job, 0, 2, fake_all_reduce, fake_broadcast, fake_all_gather};
  stepc_mlp_dp *alone = stepc_mlp_dp_create(NULL);
  stepc_mlp_dp *rank0 = stepc_mlp_dp_create_distributed(NULL, &comm);
  if (!alone || !rank0)
    return fail("create", stepc_mlp_dp_last_error(NULL));
  if (job.all_gathers != 1 || job.broadcasts < 6)
    return fail("create_distributed", "expected one all_gather (the graph hash) and a "
                                      "broadcast per param");
  const int steps = 3;
  for (int s = 0; s < steps; ++s) {
    float loss = 0, loss_alone = 0;
    if (stepc_mlp_dp_step(rank0, x, y, &loss) != 0)
      return fail("step", stepc_mlp_dp_last_error(rank0));
    if (stepc_mlp_dp_step(alone, x, y, &loss_alone) != 0)
      return fail("step alone", stepc_mlp_dp_last_error(alone));
    printf("step %d: loss %.6f (one process: %.6f)\n", s, loss, loss_alone);
    if (loss != loss_alone)
      return fail("loss", "differs from one process's");
  }
  if (stepc_mlp_dp_get_param(rank0, "w1", w1, sizeof w1) != 0 ||
      stepc_mlp_dp_get_param(alone, "w1", w1_alone, sizeof w1_alone) != 0 ||
      memcmp(w1, w1_alone, sizeof w1) != 0)
    return fail("w1", "differs from one process's");
  printf("all_reduce: %d calls, %lld floats per step (gradients: %lld, and the loss)\n",
         job.all_reduces / steps, (long long)(job.reduced_floats / steps),
         (long long)gradient_floats);
  if (job.reduced_floats != steps * (gradient_floats + 1))
    return fail("all_reduce", "did not carry exactly the gradients and the loss");

  job.fail_with = 7;
  float loss;
  if (stepc_mlp_dp_step(rank0, x, y, &loss) == 0 ||
      !strstr(stepc_mlp_dp_last_error(rank0), "all_reduce callback failed (returned 7)"))
    return fail("a failing all_reduce", stepc_mlp_dp_last_error(rank0));
  printf("a failing callback: %s\n", stepc_mlp_dp_last_error(rank0));

  job.other_differs = 1;
  stepc_mlp_dp *mismatched = stepc_mlp_dp_create_distributed(NULL, &comm);
  if (mismatched || !strstr(stepc_mlp_dp_last_error(NULL), "differs between the ranks") ||
      !strstr(stepc_mlp_dp_last_error(NULL), "rank 1 ("))
    return fail("a mismatched graph", stepc_mlp_dp_last_error(NULL));
  printf("a mismatched graph: %s\n", stepc_mlp_dp_last_error(NULL));

  comm.rank = 2;
  if (stepc_mlp_dp_create_distributed(NULL, &comm))
    return fail("rank 2 of 2", "was accepted");
  printf("rank 2 of 2: %s\n", stepc_mlp_dp_last_error(NULL));
  if (stepc_mlp_dp_create_distributed(NULL, NULL))
    return fail("a NULL communicator", "was accepted");
  printf("no communicator: %s\n", stepc_mlp_dp_last_error(NULL));

  stepc_mlp_dp_destroy(rank0);
  stepc_mlp_dp_destroy(alone);
  printf("ok\n");
  return 0;
}
