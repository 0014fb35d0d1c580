/* Runs mlp.sg compiled ahead of time, from C, with only libstepc_runtime
 * linked: no LLVM, no MLIR (tests/cli/aot_example.cmake builds and checks it).
 *
 *   stepc compile examples/mlp.sg --target cpu -o out
 *   c++ -std=c++20 -O2 -Iinclude -Iout -c out/mlp_spec.cpp
 *   cc -O2 -Iout -c examples/aot/main.c
 *   c++ main.o mlp_spec.o out/mlp.o build/lib/libstepc_runtime.a -lfmt -pthread -lm
 *   ./a.out [DIR [EXPECTED_LOSS]]
 *
 * The inputs are fixed: x[i] = ((37 i) mod 101) / 100 - 0.5 and labels
 * y[i] = i mod 10. With DIR, they are also written there as x.npy and y.npy
 * (so `stepc run examples/mlp.sg --input x=DIR/x.npy --input y=DIR/y.npy`
 * computes the same loss); with EXPECTED_LOSS, the loss must match it within
 * a relative 1e-4 or the program fails. */
#include "mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A NumPy .npy file (format 1.0) of a C-order array. */
static int write_npy(const char *path, const char *descr, const char *shape,
                     const void *data, size_t bytes) {
  char header[128];
  int len = snprintf(header, sizeof header,
                     "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
  /* Magic (6) + version (2) + length (2) + header, padded with spaces to a
   * multiple of 64 and ending in a newline. */
  int padded = (10 + len + 1 + 63) / 64 * 64 - 10;
  while (len < padded - 1)
    header[len++] = ' ';
  header[len++] = '\n';
  FILE *file = fopen(path, "wb");
  if (!file)
    return -1;
  unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                (unsigned char)(len & 0xff), (unsigned char)(len >> 8)};
  int ok = fwrite(preamble, 1, 10, file) == 10 && fwrite(header, 1, len, file) == (size_t)len &&
           fwrite(data, 1, bytes, file) == bytes;
  return (fclose(file) == 0 && ok) ? 0 : -1;
}

int main(int argc, char **argv) {
  static float x[STEPC_MLP_INPUT_X_NUMEL];
  static int32_t y[STEPC_MLP_INPUT_Y_NUMEL];
  for (int i = 0; i < STEPC_MLP_INPUT_X_NUMEL; ++i)
    x[i] = (float)((37 * i) % 101) / 100.0f - 0.5f;
  for (int i = 0; i < STEPC_MLP_INPUT_Y_NUMEL; ++i)
    y[i] = i % 10;

  if (argc > 1) {
    char path[4096];
    snprintf(path, sizeof path, "%s/x.npy", argv[1]);
    if (write_npy(path, "<f4", "(128, 784)", x, sizeof x) != 0) {
      fprintf(stderr, "cannot write %s\n", path);
      return 1;
    }
    snprintf(path, sizeof path, "%s/y.npy", argv[1]);
    if (write_npy(path, "<i4", "(128,)", y, sizeof y) != 0) {
      fprintf(stderr, "cannot write %s\n", path);
      return 1;
    }
  }

  /* NULL: the initial params embedded in mlp.o. */
  stepc_mlp *model = stepc_mlp_create(NULL);
  if (!model) {
    fprintf(stderr, "%s\n", stepc_mlp_last_error(NULL));
    return 1;
  }
  float loss = 0;
  if (stepc_mlp_step(model, x, y, &loss) != 0) {
    fprintf(stderr, "%s\n", stepc_mlp_last_error(model));
    stepc_mlp_destroy(model);
    return 1;
  }
  printf("loss = %.9g\n", loss);

  /* Params by name; the buffer must be exactly the param's size. */
  static float b3[STEPC_MLP_PARAM_B3_NUMEL];
  if (stepc_mlp_get_param(model, "b3", b3, sizeof b3) != 0 ||
      stepc_mlp_get_param(model, "b3", b3, 3) == 0) {
    fprintf(stderr, "get_param misbehaved: %s\n", stepc_mlp_last_error(model));
    stepc_mlp_destroy(model);
    return 1;
  }
  printf("a wrong size is refused: %s\n", stepc_mlp_last_error(model));
  stepc_mlp_destroy(model);

  if (argc > 2) {
    double expected = strtod(argv[2], NULL);
    double diff = fabs(loss - expected);
    if (!(diff <= 1e-4 * fabs(expected))) {
      fprintf(stderr, "loss %.9g differs from the expected %.9g by %.3g\n", loss, expected, diff);
      return 1;
    }
    printf("matches the expected loss %.9g\n", expected);
  }
  return 0;
}
