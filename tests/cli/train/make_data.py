# Writes the .npy files of tests/cli/train (no NumPy needed): three Gaussian
# blobs in 4 dimensions, labels 0..2, fixed seed.
import random, struct

def save(path, descr, shape, values):
    dims = "".join(f"{s}," for s in shape) if len(shape) == 1 else ", ".join(map(str, shape))
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    code = {"<f4": "f", "<i4": "i"}[descr]
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(f"<{len(values)}{code}", *values))

rng = random.Random(0)
centers = [[rng.gauss(0, 2) for _ in range(4)] for _ in range(3)]
labels = [rng.randrange(3) for _ in range(320)]
features = [centers[y][j] + rng.gauss(0, 1) for y in labels for j in range(4)]
save("x.npy", "<f4", (256, 4), features[:256 * 4])
save("y.npy", "<i4", (256,), labels[:256])
save("eval_x.npy", "<f4", (64, 4), features[256 * 4:])
save("eval_y.npy", "<i4", (64,), labels[256:])
